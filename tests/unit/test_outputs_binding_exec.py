"""Hostile node outputs bound into real bash and python, exactly as hostile trigger messages are.

The code forms and the injection corpus are those of test_binding_exec; only the placeholder
changes: `${nodes.up.outputs.v}` instead of a trigger-message path. Each bound program must
print the value byte for byte, and the canary file no payload may create must stay absent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.params.binding.python import bind_python
from shared.params.binding.shell import bind_shell
from shared.params.resolution import Resolution, ResolutionInput, resolve_parameters
from tests.unit.test_binding_exec import (
    CORPUS_NAMES,
    PYTHON_FORMS,
    SHELL_FORMS,
    as_bytes,
    injection_corpus,
    run_bash,
    run_python,
)

PLACEHOLDER = "${nodes.up.outputs.v}"


def from_outputs(value: str) -> Resolution:
    """`${nodes.up.outputs.v}` is `value`, as the outputs of an ancestor named `up`."""
    return resolve_parameters(
        ResolutionInput(
            workflow_type="triggered",
            cyctime=datetime(2026, 3, 10, 8, 0, tzinfo=UTC),
            workflow_name="wf",
            instance_id=1,
            version=1,
            node_name="down",
            node_outputs={"up": {"v": value}},
        )
    )


@pytest.mark.parametrize("name", CORPUS_NAMES)
@pytest.mark.parametrize(
    ("form", "code", "expected"), SHELL_FORMS, ids=[form[0] for form in SHELL_FORMS]
)
def test_shell_prints_the_output_literally(
    tmp_path: Path, name: str, form: str, code: str, expected: Callable[[str], bytes]
) -> None:
    canary = tmp_path / "pwned"
    value = injection_corpus(str(canary))[name]
    binding = bind_shell(code.replace("${p}", PLACEHOLDER), from_outputs(value))
    assert run_bash(binding, tmp_path) == expected(value)
    assert not canary.exists()


@pytest.mark.parametrize("name", CORPUS_NAMES)
@pytest.mark.parametrize(("form", "code"), PYTHON_FORMS, ids=[form[0] for form in PYTHON_FORMS])
def test_python_prints_the_output_literally(
    tmp_path: Path, name: str, form: str, code: str
) -> None:
    canary = tmp_path / "pwned"
    value = injection_corpus(str(canary))[name]
    bound = bind_python(code.replace("${p}", PLACEHOLDER), from_outputs(value))
    assert run_python(bound, tmp_path) == as_bytes(value)
    assert not canary.exists()
