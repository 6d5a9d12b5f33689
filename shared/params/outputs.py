"""Node outputs: what a node hands to its descendants, and which references to them are valid.

A node's outputs are one JSON object: the file a shell or python node wrote at
`$SLUICE_OUTPUT_FILE`, or the first row of a sql node's last statement. Descendants read them as
`${nodes.<node>.outputs.<path>}` (`${nodes["a.b"].outputs.x}` for a node name holding dots),
resolved and bound like any other parameter path. Pure: no I/O.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from shared.params.paths import PLACEHOLDER_PATTERN, parse_path

__all__ = [
    "MAX_OUTPUT_BYTES",
    "NAMESPACE",
    "OUTPUT_FILE_VAR",
    "OutputReference",
    "OutputsError",
    "ancestors",
    "invalid_references",
    "json_cell",
    "output_references",
    "parse_outputs",
    "row_outputs",
    "typed_cell",
]

NAMESPACE = "nodes"
OUTPUT_FILE_VAR = "SLUICE_OUTPUT_FILE"
MAX_OUTPUT_BYTES = 1 << 20
_PLACEHOLDER_RE = re.compile(PLACEHOLDER_PATTERN)


class OutputsError(ValueError):
    """Outputs a node produced that cannot be stored; the message names the node."""


def parse_outputs(node: str, data: bytes) -> dict[str, Any]:
    """The JSON object a node wrote to its output file.

    Raises OutputsError naming `node` when the file is over 1 MiB, not UTF-8 JSON, or not an
    object: a descendant must never see half a value or a value of the wrong shape.
    """
    where = f"node {node!r}: ${OUTPUT_FILE_VAR}"
    if len(data) > MAX_OUTPUT_BYTES:
        raise OutputsError(
            f"{where} holds {len(data)} bytes, more than the {MAX_OUTPUT_BYTES} allowed"
        )
    try:
        value: object = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise OutputsError(
            f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except ValueError as exc:
        raise OutputsError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise OutputsError(f"{where} must hold a JSON object, got {_kind(value)}")
    problem = _unstorable(value)
    if problem:
        raise OutputsError(f"{where} holds {problem}, which PostgreSQL cannot store")
    return value


def _unstorable(value: object) -> str | None:
    """What in a parsed JSON value jsonb refuses: U+0000 or an unpaired surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        texts: list[str] = []
        if isinstance(item, str):
            texts = [item]
        elif isinstance(item, dict):
            texts = list(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        for text in texts:
            if "\x00" in text:
                return "the character U+0000"
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return "an unpaired surrogate (\\ud800-\\udfff)"
    return None


def _reject_constant(name: str) -> object:
    # NaN and Infinity are not JSON: PostgreSQL's jsonb would refuse them later.
    raise ValueError(f"{name} is not a JSON value")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


def json_cell(value: object) -> object:
    """A database value as JSON: numbers stay numbers where JSON can hold them exactly, times
    become ISO 8601 text, bytes base64, anything else its text form."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        # An integral numeric fits JSON exactly; a fractional one keeps its digits as text.
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_cell(v) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        return [json_cell(v) for v in value]
    return str(value)


_INTEGER_TYPES = frozenset({"int2", "int4", "int8", "oid"})
_FLOAT_TYPES = frozenset({"float4", "float8"})


def typed_cell(type_name: str, value: object) -> object:
    """A value a node connection returned as text (see runners.connect), as the JSON value its
    PostgreSQL type stands for: integers, floats, booleans and json stay typed; numeric stays
    a number when integral (its digits as text otherwise, never rounded)."""
    if not isinstance(value, str):
        return json_cell(value)
    if type_name in _INTEGER_TYPES:
        return int(value)
    if type_name in _FLOAT_TYPES:
        number = float(value)
        return number if math.isfinite(number) else value
    if type_name == "numeric":
        return json_cell(Decimal(value))
    if type_name == "bool":
        return value in ("t", "true")
    if type_name in ("json", "jsonb"):
        return json.loads(value)
    return value


def row_outputs(
    node: str,
    columns: Sequence[str],
    row: Sequence[Any],
    types: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A sql node's outputs: its first row as an object keyed by column name; `types` are the
    columns' PostgreSQL type names, for values that arrive as text.

    Raises OutputsError naming `node` when two columns share a name (one would silently hide the
    other) or the row is over 1 MiB as JSON.
    """
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise OutputsError(
                f"node {node!r}: column {column!r} appears twice in the first row; "
                "alias one so each output has its own name"
            )
        seen.add(column)
    kinds = types if types is not None else [""] * len(columns)
    outputs = {
        column: typed_cell(kind, value)
        for column, kind, value in zip(columns, kinds, row, strict=True)
    }
    size = len(json.dumps(outputs, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_OUTPUT_BYTES:
        raise OutputsError(
            f"node {node!r}: the first row is {size} bytes as JSON, more than the "
            f"{MAX_OUTPUT_BYTES} allowed"
        )
    return outputs


@dataclass(frozen=True, slots=True)
class OutputReference:
    """One `${nodes...}` placeholder: the whole path, the node it names and the output path."""

    path: str
    node: str | None
    output_path: str | None


def output_references(texts: Iterable[str]) -> list[OutputReference]:
    """Every `${nodes...}` placeholder in `texts`, in order; `node` is None when the path does
    not have the shape `nodes.<node>.outputs[.<path>]`."""
    found: list[OutputReference] = []
    for text in texts:
        if NAMESPACE not in text:
            continue
        for match in _PLACEHOLDER_RE.finditer(text):
            path = match.group("path")
            if not path.startswith(f"{NAMESPACE}.") and not path.startswith(f"{NAMESPACE}["):
                continue
            steps = parse_path(path)
            if len(steps) < 3 or steps[2] != "outputs":
                found.append(OutputReference(path, None, None))
                continue
            rest = ".".join(steps[3:]) if len(steps) > 3 else None
            found.append(OutputReference(path, steps[1], rest))
    return found


def ancestors(upstream: Mapping[str, Sequence[str]], node: str) -> set[str]:
    """Every node `node` transitively depends on (its upstream, their upstream, ...)."""
    seen: set[str] = set()
    stack = list(upstream.get(node, ()))
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(upstream.get(name, ()))
    return seen


def invalid_references(
    node: str, texts: Iterable[str], upstream: Mapping[str, Sequence[str]]
) -> list[str]:
    """Why each `${nodes...}` reference in `node`'s texts cannot work, one message each: a
    reference must name an ancestor of `node`, and have the shape `nodes.<node>.outputs...`."""
    problems: list[str] = []
    above: set[str] | None = None
    for ref in output_references(texts):
        if ref.node is None:
            problems.append(
                f"${{{ref.path}}} must have the form ${{nodes.<node>.outputs.<path>}} "
                '(write ${nodes["a.b"].outputs.x} for a node named with dots)'
            )
            continue
        if above is None:
            above = ancestors(upstream, node)
        if ref.node not in above:
            what = (
                "is not a node of this workflow"
                if ref.node not in upstream
                else (f"is not upstream of {node!r}")
            )
            problems.append(
                f"${{{ref.path}}} reads the outputs of node {ref.node!r}, which {what}; "
                "only ancestors' outputs exist when a node runs"
            )
    return problems
