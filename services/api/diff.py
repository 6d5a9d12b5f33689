"""Structured differences between two workflow specs. Pure: no I/O.

Lists of objects that each carry a unique `name` (nodes) are compared by name, so inserting a
node reports one added node instead of every later index changing; other lists are compared
whole. Paths read like the spec: `nodes[load].upstream`, `policy.priority`.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from services.api.schemas import Change


def _named(items: list[Any]) -> dict[str, Any] | None:
    """`{name: item}` when every item is an object with a unique string `name`, else None."""
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        if item["name"] in out:
            return None
        out[item["name"]] = item
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(old: Any, new: Any, path: str, out: list[Change]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old.keys() | new.keys():
            here = _join(path, key)
            if key not in new:
                out.append(Change(path=here, op="removed", old=old[key]))
            elif key not in old:
                out.append(Change(path=here, op="added", new=new[key]))
            else:
                _walk(old[key], new[key], here, out)
        return
    if isinstance(old, list) and isinstance(new, list) and old != new:
        old_named, new_named = _named(old), _named(new)
        if old_named is not None and new_named is not None:
            for name in old_named.keys() | new_named.keys():
                here = f"{path}[{name}]"
                if name not in new_named:
                    out.append(Change(path=here, op="removed", old=old_named[name]))
                elif name not in old_named:
                    out.append(Change(path=here, op="added", new=new_named[name]))
                else:
                    _walk(old_named[name], new_named[name], here, out)
            return
    if old != new or type(old) is not type(new):
        out.append(Change(path=path or "$", op="changed", old=old, new=new))


def spec_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every difference from `old` to `new`, sorted by path."""
    out: list[Change] = []
    _walk(old, new, "", out)
    return sorted(out, key=lambda c: c.path)


def unified(old: dict[str, Any], new: dict[str, Any], old_label: str, new_label: str) -> str:
    """A unified text diff of the two specs pretty-printed with sorted keys."""
    a = json.dumps(old, indent=2, sort_keys=True, ensure_ascii=False).splitlines(keepends=True)
    b = json.dumps(new, indent=2, sort_keys=True, ensure_ascii=False).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=old_label, tofile=new_label))
