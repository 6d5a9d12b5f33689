"""Bind placeholders into PostgreSQL node code.

The code is lexed the way PostgreSQL's own scanner lexes it (`standard_conforming_strings = on`,
which the executor forces on every node connection):

- outside literals a placeholder becomes a bind parameter `$n` (one per occurrence, so PostgreSQL
  may infer a different type for each) and its value goes to `args`. This is the preferred form:
  the value never passes through the lexer at all;
- `${name:ident}` outside literals becomes a quoted identifier, `"` doubled;
- inside a standard string literal ('...', N'...') the value is inserted with `'` doubled;
- inside an escape string (E'...') `'` and `\\` are doubled. A literal continued over a newline
  (`E'a'` newline `'b'`) is one literal of the kind its first segment has, so the second segment
  of an escape string is escaped as an escape string too;
- inside a Unicode-escape literal (U&'...', U&"...") every character of the value is written as a
  Unicode escape with the literal's escape character, found by looking ahead for its UESCAPE
  clause;
- inside a quoted identifier ("...") `"` is doubled;
- inside a dollar-quoted body ($$...$$, $tag$...$tag$) or a bit-string literal (B'...', X'...') a
  placeholder is rejected: a dollar-quoted body is usually code (a function or DO block) that
  PostgreSQL lexes again later, and a bit string has no way to spell a quote;
- in comments (`-- ...`, nested `/* ... */`) it is left alone.

Code that mentions `standard_conforming_strings` and binds a value into a literal is rejected:
the meaning of a backslash in a literal must not depend on anything the code itself changes.

Values holding NUL or undecodable bytes (surrogate escapes) are rejected: PostgreSQL text cannot
hold them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.params.binding import BindingError
from shared.params.resolution import Placeholder, Resolver, find_placeholders

__all__ = ["SqlBinding", "bind_sql", "continuation_end", "literal_spans"]

_DOLLAR_TAG_RE = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][\w\u0080-\U0010ffff]*)?\$", re.ASCII)
_POSITIONAL_RE = re.compile(r"\$\d+")
_INVALID_TEXT_RE = re.compile("[\x00\ud800-\udfff]")
_NUMBER_RE = re.compile(r"[0-9][0-9A-Za-z_]*")
_SCS_RE = re.compile("standard_conforming_strings", re.IGNORECASE)
_UESCAPE_RE = re.compile("uescape", re.IGNORECASE)
# PostgreSQL's whitespace: its scanner also accepts \v since 16.
_SPACE = " \t\n\r\f\v"
_HORIZONTAL_SPACE = " \t\f\v"
_NEWLINE = "\n\r"
# Characters PostgreSQL refuses as a UESCAPE character.
_BAD_UESCAPE = set("0123456789abcdefABCDEF+'\"") | set(_SPACE)

_STRING_KINDS = ("string", "escape_string", "unicode_string", "bit_string")


@dataclass(frozen=True)
class SqlBinding:
    """Bound SQL and the bind-parameter values for `$1`, `$2`, ... in order."""

    query: str
    args: list[str]


def _is_identifier_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ord(ch) >= 0x80


def _line_comment_end(code: str, i: int) -> int:
    """Index of the newline ending the `--` comment at code[i] (or the end of the code)."""
    j = i
    while j < len(code) and code[j] not in _NEWLINE:
        j += 1
    return j


def continuation_end(code: str, i: int) -> int | None:
    """If a literal that closed just before code[i] continues, the index past the reopening quote.

    PostgreSQL joins `'a'` and `'b'` into one literal when only whitespace holding at least one
    newline (and `--` comments, each ending in a newline) separates them.
    """
    j = i
    newline = False
    while j < len(code):
        ch = code[j]
        if ch in _NEWLINE:
            newline = True
            j += 1
        elif ch in _HORIZONTAL_SPACE:
            j += 1
        elif code.startswith("--", j):
            j = _line_comment_end(code, j)
            if j >= len(code):
                return None
        elif ch == "'" and newline:
            return j + 1
        else:
            return None
    return None


def _skip_space_and_comments(code: str, i: int) -> int:
    while i < len(code):
        if code[i] in _SPACE:
            i += 1
        elif code.startswith("--", i):
            i = _line_comment_end(code, i)
        elif code.startswith("/*", i):
            i = _block_comment_end(code, i)
        else:
            break
    return i


def _block_comment_end(code: str, i: int) -> int:
    """Index just past the (nested) `/* ... */` comment opening at code[i]."""
    depth = 0
    while i < len(code):
        if code.startswith("/*", i):
            depth += 1
            i += 2
        elif code.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return i


@dataclass
class _Scanner:
    code: str
    placeholders: dict[int, Placeholder]
    resolver: Resolver
    out: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    emitted: int = 0
    # normal | string | escape_string | unicode_string | bit_string | identifier
    # | unicode_identifier | dollar
    state: str = "normal"
    tag: str = ""
    # Where the current U& literal started, and its escape character once looked up.
    literal_start: int = 0
    uescape: str | None = None
    bound_in_literal: Placeholder | None = None
    # literal_spans: record (start, end, state) of every quoted region instead of binding.
    spans: list[tuple[int, int, str]] | None = None

    def fail(self, placeholder: Placeholder | None, why: str, at: int = 0) -> BindingError:
        start = placeholder.start if placeholder is not None else at
        line = self.code.count("\n", 0, start) + 1
        if placeholder is None:
            return BindingError(f"cannot bind the SQL code (line {line}): {why}")
        text = self.code[placeholder.start : placeholder.end]
        return BindingError(f"cannot bind {text} on line {line} of the SQL code: {why}")

    def prefixed(self, i: int, prefix: str) -> bool:
        """Whether code[i] is preceded by `prefix` (any case) that starts a token.

        After a number the prefix still starts a token: PostgreSQL before 15 lexes `1e'x'` as
        the number 1 and the escape string e'x' (later versions reject it).
        """
        start = i - len(prefix)
        if start < 0 or self.code[start:i].lower() != prefix:
            return False
        word = start
        while word > 0 and _is_identifier_char(self.code[word - 1]):
            word -= 1
        return word == start or _NUMBER_RE.fullmatch(self.code, word, start) is not None

    def run(self) -> str:
        code = self.code
        i = 0
        while i < len(code):
            placeholder = self.placeholders.get(i)
            if placeholder is not None:
                if self.spans is None:
                    self.bind(placeholder)
                i = placeholder.end
                continue
            ch = code[i]
            state = self.state
            if state == "normal":
                opened = i
                i = self.normal(i)
                if self.spans is not None and self.state != "normal":
                    self.spans.append((opened, len(code), self.state))
            elif state in ("string", "unicode_string"):
                i = i + 2 if code.startswith("''", i) else self.quote_at(i)
            elif state == "escape_string":
                i = i + 2 if ch == "\\" or code.startswith("''", i) else self.quote_at(i)
            elif state == "bit_string":
                i = self.quote_at(i)
            elif state in ("identifier", "unicode_identifier"):
                if code.startswith('""', i):
                    i += 2
                elif ch == '"':
                    self.state = "normal"
                    i += 1
                else:
                    i += 1
            elif code.startswith(self.tag, i):
                self.state = "normal"
                i += len(self.tag)
            else:
                i += 1
            if self.spans and state != "normal" and self.state == "normal":
                opened, _, kind = self.spans[-1]
                self.spans[-1] = (opened, i, kind)
        self.out.append(code[self.emitted :])
        if self.bound_in_literal is not None and _SCS_RE.search(code):
            raise self.fail(
                self.bound_in_literal,
                "the code mentions standard_conforming_strings, which changes what a "
                "backslash in a literal means; use a bind parameter (the placeholder outside "
                "quotes) instead",
            )
        return "".join(self.out)

    def quote_at(self, i: int) -> int:
        """Step over code[i] inside a string literal; a quote ends it unless it continues."""
        if self.code[i] != "'":
            return i + 1
        reopened = continuation_end(self.code, i + 1)
        if reopened is not None:
            return reopened
        self.state = "normal"
        return i + 1

    def normal(self, i: int) -> int:
        code = self.code
        ch = code[i]
        if code.startswith("--", i):
            return _line_comment_end(code, i)
        if code.startswith("/*", i):
            return _block_comment_end(code, i)
        if ch == "'":
            if self.prefixed(i, "e"):
                self.state = "escape_string"
            elif self.prefixed(i, "u&"):
                self.state = "unicode_string"
            elif self.prefixed(i, "b") or self.prefixed(i, "x"):
                self.state = "bit_string"
            else:
                self.state = "string"
            self.literal_start = i
            self.uescape = None
            return i + 1
        if ch == '"':
            self.state = "unicode_identifier" if self.prefixed(i, "u&") else "identifier"
            self.literal_start = i
            self.uescape = None
            return i + 1
        # Words are skipped whole, so a `$` reached here starts a token (after a number too).
        if ch == "$":
            if _POSITIONAL_RE.match(code, i):
                raise self.fail(
                    None, "the query uses positional parameters itself; use placeholders", at=i
                )
            tag = _DOLLAR_TAG_RE.match(code, i)
            if tag is not None:
                self.state = "dollar"
                self.tag = tag.group(0)
                return tag.end()
        if ch.isdigit():
            # A number ends where a `$` begins: `1$$x$$` is 1 followed by a dollar quote.
            number = _NUMBER_RE.match(code, i)
            assert number is not None
            return self.word_end(i, number.end())
        if _is_identifier_char(ch):
            # Skip the whole word so a `$` inside an identifier (a$b) is not read as a quote.
            end = i
            while end < len(code) and _is_identifier_char(code[end]):
                end += 1
            return self.word_end(i, end)
        return i + 1

    def word_end(self, start: int, end: int) -> int:
        """`end`, or the first placeholder between start and end (checked as glued later)."""
        for position in range(start + 1, end):
            if position in self.placeholders:
                return position
        return end

    def literal_end(self, i: int, kind: str) -> int:
        """Index just past the literal of `kind` that code[i] is inside (continuations included)."""
        code = self.code
        while i < len(code):
            placeholder = self.placeholders.get(i)
            if placeholder is not None:
                i = placeholder.end
            elif kind == "unicode_identifier":
                if code.startswith('""', i):
                    i += 2
                elif code[i] == '"':
                    return i + 1
                else:
                    i += 1
            elif code.startswith("''", i):
                i += 2
            elif code[i] == "'":
                reopened = continuation_end(code, i + 1)
                if reopened is None:
                    return i + 1
                i = reopened
            else:
                i += 1
        return i

    def escape_character(self, placeholder: Placeholder) -> str:
        """The escape character of the U& literal being scanned: `\\` unless UESCAPE says."""
        if self.uescape is not None:
            return self.uescape
        end = self.literal_end(placeholder.end, self.state)
        after = _skip_space_and_comments(self.code, end)
        keyword = _UESCAPE_RE.match(self.code, after)
        if keyword is None or (
            keyword.end() < len(self.code) and _is_identifier_char(self.code[keyword.end()])
        ):
            self.uescape = "\\"
            return self.uescape
        quoted = _skip_space_and_comments(self.code, keyword.end())
        spelled = self.code[quoted : quoted + 3]
        if len(spelled) != 3 or spelled[0] != "'" or spelled[2] != "'":
            raise self.fail(placeholder, "the literal's UESCAPE clause is not a plain 'c'")
        if spelled[1] in _BAD_UESCAPE or continuation_end(self.code, quoted + 3) is not None:
            raise self.fail(placeholder, "the literal's UESCAPE character is not valid")
        self.uescape = spelled[1]
        return self.uescape

    def value(self, placeholder: Placeholder) -> str:
        value = self.resolver.resolve(placeholder.path, placeholder.default)
        if _INVALID_TEXT_RE.search(value):
            raise self.fail(placeholder, "its value holds NUL or bytes that are not UTF-8")
        return value

    def bind(self, placeholder: Placeholder) -> None:
        state = self.state
        if state == "dollar":
            raise self.fail(
                placeholder,
                "it is inside a dollar-quoted body, which is often code; "
                "use a plain literal or a bind parameter outside it",
            )
        if state == "bit_string":
            raise self.fail(placeholder, "it is inside a bit-string literal (B'' or X'')")
        if placeholder.ident and state in _STRING_KINDS:
            raise self.fail(placeholder, "':ident' cannot be used inside a string literal")
        if state in ("unicode_string", "unicode_identifier"):
            escape = self.escape_character(placeholder)
            replacement = "".join(f"{escape}+{ord(ch):06X}" for ch in self.value(placeholder))
        elif state == "string":
            replacement = self.value(placeholder).replace("'", "''")
        elif state == "escape_string":
            replacement = self.value(placeholder).replace("\\", "\\\\").replace("'", "''")
        elif state == "identifier":
            replacement = self.value(placeholder).replace('"', '""')
        else:
            before = self.code[placeholder.start - 1 : placeholder.start]
            after = self.code[placeholder.end : placeholder.end + 1]
            if (before and _is_identifier_char(before)) or (after and _is_identifier_char(after)):
                raise self.fail(placeholder, "it is glued to a word; separate it with a space")
            value = self.value(placeholder)
            if placeholder.ident:
                replacement = '"' + value.replace('"', '""') + '"'
            else:
                self.args.append(value)
                replacement = f"${len(self.args)}"
        if state in _STRING_KINDS:
            self.bound_in_literal = self.bound_in_literal or placeholder
        self.out.append(self.code[self.emitted : placeholder.start])
        self.out.append(replacement)
        self.emitted = placeholder.end


def literal_spans(code: str, placeholders: list[Placeholder]) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every quoted region of `code`, as the binder lexes it.

    `kind` is a binder state: string, escape_string, unicode_string, bit_string, identifier,
    unicode_identifier or dollar. Placeholders are skipped, not bound.
    """
    scanner = _Scanner(code, {p.start: p for p in placeholders}, _NO_VALUES, spans=[])
    try:
        scanner.run()
    except BindingError:
        # Positional parameters in the code: binding refuses those on its own.
        pass
    assert scanner.spans is not None
    return scanner.spans


class _NoValues:
    def resolvable(self, path: str) -> bool:
        return False

    def resolve(self, path: str, default: str | None = None) -> str:
        raise AssertionError("literal_spans binds nothing")


_NO_VALUES = _NoValues()


def bind_sql(code: str, resolver: Resolver) -> SqlBinding:
    """Bind every placeholder in SQL `code`; run `query` with `args` as its `$n` parameters.

    Raises MissingPath for a placeholder that does not resolve and BindingError for one that
    cannot be bound safely.
    """
    placeholders = {p.start: p for p in find_placeholders(code, resolver.resolvable)}
    if not placeholders:
        return SqlBinding(query=code, args=[])
    # Imported here: the check lexes literals with this module's scanner.
    from shared.params.binding.reparsed import refuse_reparsed

    refuse_reparsed(code, "sql", resolver.resolvable)
    scanner = _Scanner(code, placeholders, resolver)
    query = scanner.run()
    return SqlBinding(query=query, args=scanner.args)
