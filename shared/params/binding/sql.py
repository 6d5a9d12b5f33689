"""Bind placeholders into PostgreSQL node code.

- outside literals a placeholder becomes a bind parameter `$n` (one per occurrence, so PostgreSQL
  may infer a different type for each) and its value goes to `args`;
- `${name:ident}` outside literals becomes a quoted identifier, `"` doubled;
- inside a standard string literal ('...') the value is inserted with `'` doubled. This relies on
  `standard_conforming_strings = on` (the PostgreSQL default since 9.1): backslashes are plain;
- inside an escape string (E'...') `'` and `\\` are doubled;
- inside a quoted identifier ("...") `"` is doubled;
- inside a dollar-quoted body ($$...$$, $tag$...$tag$) or a Unicode-escape literal (U&'...')
  a placeholder is rejected: a dollar-quoted body is usually code (a function or DO block) and a
  Unicode escape literal's escape character may be changed by a later UESCAPE clause;
- in comments (`-- ...`, nested `/* ... */`) it is left alone.

Values holding NUL or undecodable bytes (surrogate escapes) are rejected: PostgreSQL text cannot
hold them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.params.binding import BindingError
from shared.params.resolution import Placeholder, Resolver, find_placeholders

__all__ = ["SqlBinding", "bind_sql"]

_DOLLAR_TAG_RE = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$")
_POSITIONAL_RE = re.compile(r"\$\d+")
_INVALID_TEXT_RE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class SqlBinding:
    """Bound SQL and the bind-parameter values for `$1`, `$2`, ... in order."""

    query: str
    args: list[str]


def _is_identifier_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ord(ch) >= 0x80


@dataclass
class _Scanner:
    code: str
    placeholders: dict[int, Placeholder]
    resolver: Resolver
    out: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    emitted: int = 0
    # normal | string | escape_string | unicode_string | identifier | unicode_identifier | dollar
    state: str = "normal"
    tag: str = ""

    def fail(self, placeholder: Placeholder | None, why: str, at: int = 0) -> BindingError:
        start = placeholder.start if placeholder is not None else at
        line = self.code.count("\n", 0, start) + 1
        if placeholder is None:
            return BindingError(f"cannot bind the SQL code (line {line}): {why}")
        text = self.code[placeholder.start : placeholder.end]
        return BindingError(f"cannot bind {text} on line {line} of the SQL code: {why}")

    def prefixed(self, i: int, prefix: str) -> bool:
        """Whether code[i] is preceded by `prefix` (any case) that starts a token."""
        start = i - len(prefix)
        if start < 0 or self.code[start:i].lower() != prefix:
            return False
        return start == 0 or not _is_identifier_char(self.code[start - 1])

    def run(self) -> str:
        code = self.code
        i = 0
        while i < len(code):
            placeholder = self.placeholders.get(i)
            if placeholder is not None:
                self.bind(placeholder)
                i = placeholder.end
                continue
            ch = code[i]
            if self.state == "normal":
                i = self.normal(i)
            elif self.state in ("string", "unicode_string"):
                i = i + 2 if code.startswith("''", i) else self.close_at(i, "'")
            elif self.state == "escape_string":
                i = i + 2 if ch == "\\" or code.startswith("''", i) else self.close_at(i, "'")
            elif self.state in ("identifier", "unicode_identifier"):
                i = i + 2 if code.startswith('""', i) else self.close_at(i, '"')
            elif code.startswith(self.tag, i):
                self.state = "normal"
                i += len(self.tag)
            else:
                i += 1
        self.out.append(code[self.emitted :])
        return "".join(self.out)

    def close_at(self, i: int, closer: str) -> int:
        if self.code[i] == closer:
            self.state = "normal"
        return i + 1

    def normal(self, i: int) -> int:
        code = self.code
        ch = code[i]
        if code.startswith("--", i):
            end = code.find("\n", i)
            return len(code) if end < 0 else end
        if code.startswith("/*", i):
            depth = 0
            while i < len(code):
                if code.startswith("/*", i):
                    depth += 1
                    i += 2
                elif code.startswith("*/", i):
                    depth -= 1
                    i += 2
                    if depth == 0:
                        break
                else:
                    i += 1
            return i
        if ch == "'":
            if self.prefixed(i, "e"):
                self.state = "escape_string"
            elif self.prefixed(i, "u&"):
                self.state = "unicode_string"
            else:
                self.state = "string"
            return i + 1
        if ch == '"':
            self.state = "unicode_identifier" if self.prefixed(i, "u&") else "identifier"
            return i + 1
        if ch == "$" and (i == 0 or not _is_identifier_char(code[i - 1])):
            if _POSITIONAL_RE.match(code, i):
                raise self.fail(
                    None, "the query uses positional parameters itself; use placeholders", at=i
                )
            tag = _DOLLAR_TAG_RE.match(code, i)
            if tag is not None:
                self.state = "dollar"
                self.tag = tag.group(0)
                return tag.end()
        if _is_identifier_char(ch):
            # Skip the whole word so a `$` inside an identifier (a$b) is not read as a quote.
            while i < len(code) and _is_identifier_char(code[i]) and i not in self.placeholders:
                i += 1
            return i
        return i + 1

    def value(self, placeholder: Placeholder) -> str:
        value = self.resolver.resolve(placeholder.path, placeholder.default)
        if _INVALID_TEXT_RE.search(value):
            raise self.fail(placeholder, "its value holds NUL or bytes that are not UTF-8")
        return value

    def bind(self, placeholder: Placeholder) -> None:
        state = self.state
        if state in ("unicode_string", "unicode_identifier"):
            raise self.fail(placeholder, "it is inside a U& literal; use a plain literal")
        if state == "dollar":
            raise self.fail(
                placeholder,
                "it is inside a dollar-quoted body, which is often code; "
                "use a plain literal or a bind parameter outside it",
            )
        if placeholder.ident and state in ("string", "escape_string"):
            raise self.fail(placeholder, "':ident' cannot be used inside a string literal")
        value = self.value(placeholder)
        if state == "string":
            replacement = value.replace("'", "''")
        elif state == "escape_string":
            replacement = value.replace("\\", "\\\\").replace("'", "''")
        elif state == "identifier":
            replacement = value.replace('"', '""')
        else:
            before = self.code[placeholder.start - 1 : placeholder.start]
            after = self.code[placeholder.end : placeholder.end + 1]
            if (before and _is_identifier_char(before)) or (after and _is_identifier_char(after)):
                raise self.fail(placeholder, "it is glued to a word; separate it with a space")
            if placeholder.ident:
                replacement = '"' + value.replace('"', '""') + '"'
            else:
                self.args.append(value)
                replacement = f"${len(self.args)}"
        self.out.append(self.code[self.emitted : placeholder.start])
        self.out.append(replacement)
        self.emitted = placeholder.end


def bind_sql(code: str, resolver: Resolver) -> SqlBinding:
    """Bind every placeholder in SQL `code`; run `query` with `args` as its `$n` parameters.

    Raises MissingPath for a placeholder that does not resolve and BindingError for one that
    cannot be bound safely.
    """
    placeholders = {p.start: p for p in find_placeholders(code, resolver.resolvable)}
    if not placeholders:
        return SqlBinding(query=code, args=[])
    scanner = _Scanner(code, placeholders, resolver)
    query = scanner.run()
    return SqlBinding(query=query, args=scanner.args)
