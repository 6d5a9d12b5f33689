"""Parameter resolution for one node attempt.

`resolve_parameters` merges the parameter sources in precedence order, builds the built-in
variables from cyctime, and resolves every parameter value: `$[...]` date expressions first, then
`${...}` references to built-ins and other parameters (recursively, cycles are errors). The result
answers `${path}` / `${path:-default}` lookups for the binders, which use `find_placeholders` to
decide which `${...}` in node code are placeholders at all.

Names: a defined parameter is referenced by its name (`${p}`, or `${p.field}` when its value is
JSON or a string holding JSON). `workflow.`, `system.` and `node.` paths always mean built-ins. A
parameter named `bizdate` or `cyctime` shadows the built-in of that name, as DataWorks users often
define `bizdate=$[yyyymmdd-1]` themselves (same value).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.params.dates import DateExpressionError, expand_date_expressions
from shared.params.paths import PLACEHOLDER_PATTERN, MissingPath, lookup, render_value

__all__ = [
    "BUILTIN_NAMESPACES",
    "ParameterCycleError",
    "ParameterError",
    "Placeholder",
    "Resolution",
    "ResolutionInput",
    "Resolver",
    "WorkflowType",
    "find_placeholders",
    "resolve_parameters",
]

WorkflowType = Literal["scheduled", "triggered", "manual"]

# Paths under these roots are built-ins even when they do not exist (a missing one fails the node).
# `nodes` holds the outputs of the node's ancestors (shared.params.outputs).
BUILTIN_NAMESPACES = ("workflow", "system", "node", "nodes")
_BUILTIN_NAMES = frozenset({"bizdate", "cyctime"})
_PLACEHOLDER_RE = re.compile(PLACEHOLDER_PATTERN)


class ParameterError(ValueError):
    """A parameter value that cannot be resolved (bad date expression, reserved name...)."""


class ParameterCycleError(ParameterError):
    """Parameters that reference each other in a cycle; the message spells the cycle out."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(f"parameter cycle: {' -> '.join(cycle)}")


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One `${path}`, `${path:-default}` or `${path:ident}` found in node code."""

    start: int
    end: int
    path: str
    default: str | None
    ident: bool

    @property
    def key(self) -> tuple[str, str | None]:
        """Placeholders with the same key always have the same value."""
        return (self.path, self.default)


def find_placeholders(code: str, resolvable: Callable[[str], bool]) -> list[Placeholder]:
    """Every `${...}` in `code` whose path `resolvable` accepts, in order of appearance.

    Anything else written `${NAME}` (`${HOME}`, `${FILE_PATH}`, `${1}`) is not a placeholder and
    must be left alone: in shell nodes it is the shell's own syntax.
    """
    found: list[Placeholder] = []
    for match in _PLACEHOLDER_RE.finditer(code):
        path = match.group("path")
        if resolvable(path):
            found.append(
                Placeholder(
                    start=match.start(),
                    end=match.end(),
                    path=path,
                    default=match.group("default"),
                    ident=match.group("ident") is not None,
                )
            )
    return found


class Resolver(Protocol):
    """What a binder needs: which paths are placeholders, and their rendered values."""

    def resolvable(self, path: str) -> bool:
        """True when `${path}` is a placeholder (it may still fail to resolve)."""
        ...

    def resolve(self, path: str, default: str | None = None) -> str:
        """The rendered value of `${path}`; raises MissingPath when absent and no default."""
        ...


def _head(path: str) -> str:
    """The first step of a path (up to the first '.' or '[')."""
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _is_builtin_path(path: str) -> bool:
    return any(path.startswith((f"{root}.", f"{root}[")) for root in BUILTIN_NAMESPACES)


def _resolvable(path: str, params: Container[str]) -> bool:
    """A defined parameter, `bizdate`/`cyctime`, or a workflow./system./node. path."""
    if _is_builtin_path(path):
        return True
    head = _head(path)
    return head in params or head in _BUILTIN_NAMES


@dataclass(frozen=True)
class ResolutionInput:
    """Everything parameter resolution needs for one node attempt.

    Parameter values are JSON values; strings may hold `$[...]` and `${...}` expressions.
    `cyctime` is the base time (scheduled fire time, else admission time); it is converted to
    `timezone`. `bizdate` overrides `${bizdate}` / `${system.biz.date}` only: a caller that
    takes a business date from a run request chooses cyctime to match (bizdate + 1 day).
    """

    workflow_type: WorkflowType
    cyctime: datetime
    workflow_name: str
    instance_id: str | int
    version: str | int
    node_name: str
    timezone: str = "UTC"
    bizdate: date | None = None
    workspace_params: Mapping[str, object] = field(default_factory=dict)
    workflow_params: Mapping[str, object] = field(default_factory=dict)
    node_params: Mapping[str, object] = field(default_factory=dict)
    runtime_params: Mapping[str, object] = field(default_factory=dict)
    trigger_message: object = None
    # `${workflow.triggerMessages}`: every message a coalescing window gathered, in admission
    # order. None for an instance of one event (or none): the list of its one message, or [].
    trigger_messages: Sequence[object] | None = None
    # Ancestor node name -> the outputs of its latest successful attempt.
    node_outputs: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.workflow_type not in ("scheduled", "triggered", "manual"):
            raise ValueError(f"unknown workflow type {self.workflow_type!r}")
        if self.cyctime.tzinfo is None or self.cyctime.utcoffset() is None:
            raise ValueError("cyctime must be timezone-aware")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {self.timezone!r}") from error

    def merged_params(self) -> dict[str, object]:
        """All parameters, higher-precedence sources overriding lower ones."""
        if self.workflow_type == "manual":
            layers = (
                self.workspace_params,
                self.node_params,
                self.workflow_params,
                self.runtime_params,
            )
        else:
            layers = (
                self.workspace_params,
                self.workflow_params,
                self.node_params,
                self.runtime_params,
            )
        merged: dict[str, object] = {}
        for layer in layers:
            merged.update(layer)
        return merged


@dataclass(frozen=True)
class Resolution:
    """Resolved parameters and built-ins for one node attempt; implements Resolver.

    `values` holds every parameter rendered as a string (for `SLUICE_PARAM_<NAME>`), `params`
    the same parameters as JSON values, `builtins` the tree of built-in variables.
    """

    values: dict[str, str]
    params: dict[str, object]
    builtins: dict[str, object]

    def resolvable(self, path: str) -> bool:
        """True for a defined parameter, `bizdate`/`cyctime`, or a workflow./system./node. path."""
        return _resolvable(path, self.params)

    def lookup(self, path: str) -> object:
        """The JSON value at `path`; raises MissingPath when it does not resolve."""
        if _is_builtin_path(path):
            return lookup(self.builtins, path)
        head = _head(path)
        if head in self.params:
            return lookup({head: self.params[head]}, path)
        if head in _BUILTIN_NAMES:
            return lookup(self.builtins, path)
        raise MissingPath(path, "not a parameter or built-in variable")

    def resolve(self, path: str, default: str | None = None) -> str:
        """The rendered value at `path`, else `default`; raises MissingPath when neither."""
        try:
            return render_value(self.lookup(path))
        except MissingPath:
            if default is None:
                raise
            return default


def _trigger_messages(inp: ResolutionInput) -> list[object]:
    if inp.trigger_messages is not None:
        return list(inp.trigger_messages)
    return [] if inp.trigger_message is None else [inp.trigger_message]


def _builtins(inp: ResolutionInput, cyctime: datetime) -> dict[str, object]:
    bizdate = inp.bizdate if inp.bizdate is not None else cyctime.date() - timedelta(days=1)
    bizdate_text = bizdate.strftime("%Y%m%d")
    cyctime_text = f"{cyctime:%Y%m%d%H%M%S}"
    return {
        "bizdate": bizdate_text,
        "cyctime": cyctime_text,
        "system": {
            "biz": {"date": bizdate_text, "curdate": f"{cyctime:%Y%m%d}"},
            "datetime": cyctime_text,
        },
        "workflow": {
            "name": inp.workflow_name,
            "instanceId": inp.instance_id,
            "version": inp.version,
            "triggerMessage": inp.trigger_message,
            "triggerMessages": _trigger_messages(inp),
        },
        "node": {"name": inp.node_name},
        "nodes": {name: {"outputs": dict(out)} for name, out in inp.node_outputs.items()},
    }


class _Resolver:
    """Resolves merged parameters on demand, memoising results and detecting cycles."""

    def __init__(
        self, raw: dict[str, object], builtins: dict[str, object], cyctime: datetime
    ) -> None:
        self.raw = raw
        self.builtins = builtins
        self.cyctime = cyctime
        self.done: dict[str, object] = {}
        self.stack: list[str] = []

    def resolvable(self, path: str) -> bool:
        return _resolvable(path, self.raw)

    def lookup(self, path: str) -> object:
        if _is_builtin_path(path):
            return lookup(self.builtins, path)
        head = _head(path)
        if head in self.raw:
            return lookup({head: self.parameter(head)}, path)
        return lookup(self.builtins, path)

    def parameter(self, name: str) -> object:
        if name in self.done:
            return self.done[name]
        if name in self.stack:
            raise ParameterCycleError([*self.stack[self.stack.index(name) :], name])
        self.stack.append(name)
        try:
            value = self._evaluate(name, self.raw[name])
        finally:
            self.stack.pop()
        self.done[name] = value
        return value

    def _evaluate(self, name: str, raw: object) -> object:
        if not isinstance(raw, str):
            return raw
        try:
            text = expand_date_expressions(raw, self.cyctime)
        except DateExpressionError as error:
            raise ParameterError(f"parameter {name!r}: {error}") from error
        placeholders = find_placeholders(text, self.resolvable)
        pieces: list[str] = []
        position = 0
        for placeholder in placeholders:
            if placeholder.ident:
                raise ParameterError(
                    f"parameter {name!r}: ':ident' is only meaningful in SQL node code"
                )
            try:
                value = self.lookup(placeholder.path)
            except MissingPath as error:
                if placeholder.default is None:
                    if error.parameter is None:
                        error.parameter = name
                    raise
                value = placeholder.default
            # A value that is exactly one reference keeps the referenced JSON value, so paths
            # into it (`${p.field}`) need no re-parsing.
            if len(placeholders) == 1 and placeholder.start == 0 and placeholder.end == len(text):
                return value
            pieces.append(text[position : placeholder.start])
            pieces.append(render_value(value))
            position = placeholder.end
        pieces.append(text[position:])
        return "".join(pieces)


def resolve_parameters(inp: ResolutionInput) -> Resolution:
    """Resolve every parameter of one node attempt.

    Raises MissingPath (naming the path and the parameter) for a reference that does not
    resolve and has no default, ParameterCycleError for a reference cycle and ParameterError
    for a bad date expression.
    """
    cyctime = inp.cyctime.astimezone(ZoneInfo(inp.timezone))
    builtins = _builtins(inp, cyctime)
    resolver = _Resolver(inp.merged_params(), builtins, cyctime)
    params = {name: resolver.parameter(name) for name in resolver.raw}
    return Resolution(
        values={name: render_value(value) for name, value in params.items()},
        params=params,
        builtins=builtins,
    )
