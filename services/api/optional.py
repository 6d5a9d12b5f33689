"""Functions the API calls in other services' packages, imported when a route needs them.

The executor owns attempt state (terminate, rerun, logs) and the scheduler owns backfills; the API
imports their functions lazily so it serves everything else in an installation without them, and
answers 501 naming what is missing for the routes that need them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from services.api.errors import ApiError


def function(module: str, name: str, feature: str) -> Callable[..., Any]:
    """`module.name`, or ApiError 501 when that module or function is not installed.

    Only the absence of `module` itself (or a parent package) counts as "not installed"; an import
    error raised from inside an installed module is a bug and propagates.
    """
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        parents = {module.rsplit(".", i)[0] for i in range(module.count(".") + 1)}
        if exc.name not in parents:
            raise
        raise ApiError(
            501, f"{feature} is not available in this installation ({module} is missing)"
        ) from None
    found = getattr(mod, name, None)
    if not callable(found):
        raise ApiError(
            501, f"{feature} is not available in this installation ({module}.{name} is missing)"
        )
    return found  # type: ignore[no-any-return]
