"""Paths into JSON values and `${...}` templates.

A path is a dotted list of steps: `.field`, `.0` or `[0]` for list items, and `["key.with.dots"]`
for keys that the dotted form cannot spell. Keys may contain `-` (`headers.message-id`). When a step
meets a string that holds a JSON object or array, the string is parsed and the path continues, so
`value.user_id` works on a Kafka message whose `value` is the string '{"user_id": "1001"}'.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

__all__ = [
    "PATH_PATTERN",
    "PLACEHOLDER_PATTERN",
    "MissingPath",
    "lookup",
    "parse_path",
    "render_template",
    "render_value",
]

# A key step: word characters and '-', so header names such as "message-id" work.
_SEGMENT = r"[\w-]+"
# A bracket step: a list index or a quoted key that may hold any character but its own quote.
_BRACKET = r"\[(?:\d+|\"[^\"]*\"|'[^']*')\]"
# Placeholder paths start with a letter or '_', so shell specials (`${1}`, `${#}`) never match.
PATH_PATTERN = rf"[A-Za-z_][\w-]*(?:\.{_SEGMENT}|{_BRACKET})*"
# `${path}`, `${path:-default}` (the default may hold neither brace) or `${path:ident}`.
PLACEHOLDER_PATTERN = (
    rf"\$\{{(?P<path>{PATH_PATTERN})(?::-(?P<default>[^{{}}]*)|(?P<ident>:ident))?\}}"
)

_STEP_RE = re.compile(rf"\.?(?P<key>{_SEGMENT})|(?P<bracket>{_BRACKET})")
_PATH_RE = re.compile(rf"(?:{_SEGMENT}|{_BRACKET})(?:\.{_SEGMENT}|{_BRACKET})*")
_TEMPLATE_RE = re.compile(r"\$\{(?P<body>[^{}]*)\}")
_TEMPLATE_BODY_RE = re.compile(rf"(?P<path>{PATH_PATTERN})(?::-(?P<default>.*))?", re.DOTALL)


class MissingPath(LookupError):
    """A path that does not resolve; its message names the full path and the failing step."""

    def __init__(self, path: str, reason: str, *, parameter: str | None = None) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason
        self.parameter = parameter

    def __str__(self) -> str:
        text = f"missing path {self.path!r} ({self.reason})"
        if self.parameter is not None:
            text += f" in parameter {self.parameter!r}"
        return text


def parse_path(path: str) -> list[str]:
    """Split `path` into its steps (keys and list indices, all as strings).

    Raises ValueError when `path` is not a well-formed path.
    """
    if not _PATH_RE.fullmatch(path):
        raise ValueError(f"invalid path {path!r}")
    steps: list[str] = []
    for match in _STEP_RE.finditer(path):
        bracket = match.group("bracket")
        if bracket is None:
            steps.append(match.group("key"))
        elif bracket[1] in "\"'":
            steps.append(bracket[2:-2])
        else:
            steps.append(bracket[1:-1])
    return steps


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string that is not a JSON object or array"
    return f"a {type(value).__name__}"


def _parse_json_container(text: str) -> object | None:
    """The object or array `text` holds as JSON, else None."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        parsed: object = json.loads(stripped)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict | list) else None


def lookup(root: object, path: str) -> object:
    """Follow `path` from `root` and return the value found there.

    Raises MissingPath (naming the whole path and the step that failed) when a key is absent, an
    index is out of range, or a step meets a scalar; ValueError when `path` is malformed.
    """
    steps = parse_path(path)
    current = root
    walked = ""
    for step in steps:
        where = repr(walked) if walked else "the root"
        if isinstance(current, str):
            parsed = _parse_json_container(current)
            if parsed is None:
                raise MissingPath(path, f"value at {where} is {_describe(current)}")
            current = parsed
        if isinstance(current, Mapping):
            if step not in current:
                raise MissingPath(path, f"no key {step!r}")
            current = current[step]
        elif isinstance(current, Sequence) and not isinstance(current, str | bytes):
            if not step.isdigit():
                raise MissingPath(path, f"value at {where} is a list; {step!r} is not an index")
            index = int(step)
            if index >= len(current):
                raise MissingPath(
                    path, f"index {index} out of range, the list has {len(current)} items"
                )
            current = current[index]
        else:
            raise MissingPath(path, f"value at {where} is {_describe(current)}")
        walked = f"{walked}.{step}" if walked else step
    return current


def render_value(value: object) -> str:
    """Render a value for substitution: strings as themselves, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render_template(template: str, context: Mapping[str, object]) -> str:
    """Replace every `${path}` / `${path:-default}` in `template` with its rendered value.

    Raises MissingPath for a path that does not resolve and has no default, ValueError for a
    `${...}` that is not a path.
    """

    def substitute(match: re.Match[str]) -> str:
        body = _TEMPLATE_BODY_RE.fullmatch(match.group("body"))
        if body is None:
            raise ValueError(f"invalid placeholder {match.group(0)!r} in template")
        try:
            return render_value(lookup(context, body.group("path")))
        except MissingPath:
            default = body.group("default")
            if default is None:
                raise
            return default

    return _TEMPLATE_RE.sub(substitute, template)
