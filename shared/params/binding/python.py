"""Bind placeholders into Python node code as literal data.

The code is tokenized with `tokenize` (placeholders are first swapped for marker identifiers, so
the code tokenizes as the author meant it):

- a placeholder inside a string literal is replaced by the value escaped for that literal: its
  quote character, raw or not, bytes or text, and in f-strings `{`/`}` doubled. Only the literal
  text of an f-string may hold placeholders; one inside a replacement field is rejected. A raw
  literal that cannot spell the value (a quote, a newline, a trailing backslash...) is rewritten
  as the equivalent non-raw literal;
- outside literals it becomes a string literal (`repr`); glued to an identifier or a number
  (`f${x}`) it is rejected, since the result would change the meaning of the neighbour;
- in comments it is left alone.

The code with markers must parse with this interpreter's grammar, and the bound code is parsed
again before it is returned, so a value can never leave its literal.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import warnings
from functools import lru_cache

from shared.params.binding import BindingError
from shared.params.binding.reparsed import refuse_reparsed
from shared.params.resolution import Placeholder, Resolver, find_placeholders

__all__ = ["bind_python"]

_STRING_START_RE = re.compile(r"(?P<prefix>[A-Za-z]*)(?P<quote>'''|\"\"\"|'|\")")
_SURROGATES = range(0xD800, 0xE000)
# Python 3.12 splits f-strings into several tokens; 3.11 has one STRING token per f-string.
_FSTRING_START: int | None = getattr(tokenize, "FSTRING_START", None)
_FSTRING_END: int | None = getattr(tokenize, "FSTRING_END", None)
# Tokens that never hold a placeholder; at the end of the code they may sit past the last line.
_LAYOUT_TOKENS = frozenset(
    {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
)


@lru_cache(maxsize=8)
def _text_table(quote: str, fstring: bool) -> dict[int, str]:
    table: dict[int, str] = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]}
    table.update({code: f"\\u{code:04x}" for code in _SURROGATES})
    table.update({ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
    table[ord(quote)] = "\\" + quote
    if fstring:
        table.update({ord("{"): "{{", ord("}"): "}}"})
    return table


@lru_cache(maxsize=2)
def _bytes_table(quote: str) -> dict[int, str]:
    table = {code: f"\\x{code:02x}" for code in range(256) if not 0x20 <= code < 0x7F}
    table.update({ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
    table[ord(quote)] = "\\" + quote
    return table


def _as_bytes(value: str) -> bytes:
    # Surrogate-escaped text (undecodable bytes) turns back into the bytes it came from.
    return value.encode("utf-8", "surrogateescape")


def _escape(value: str, quote: str, *, is_bytes: bool, fstring: bool) -> str:
    """`value` spelled for the inside of a non-raw literal quoted with `quote`."""
    if is_bytes:
        return _as_bytes(value).decode("latin-1").translate(_bytes_table(quote[0]))
    return value.translate(_text_table(quote[0], fstring))


def _fits_raw(value: str, quote: str, *, is_bytes: bool) -> bool:
    """Whether a raw literal can hold `value` as it is, meaning exactly `value`."""
    if value.endswith("\\") or quote[0] in value:
        return False
    if is_bytes:
        return all(ch == "\t" or " " <= ch <= "~" for ch in value)
    return not any(
        ch in "\n\r" or (ord(ch) < 0x20 and ch != "\t") or ord(ch) in _SURROGATES for ch in value
    )


def _skip_string(text: str, j: int) -> int:
    """Index just past the string literal whose opening quote is at text[j]."""
    start = j
    while start > 0 and text[start - 1].isalpha():
        start -= 1
    # Letters glued to a quote are a prefix only if they spell one (`if'x'` is a keyword).
    prefix = text[start:j].lower()
    is_f = "f" in prefix and len(prefix) <= 2 and set(prefix) <= set("rbfu")
    quote = text[j : j + 3] if text[j : j + 3] in ("'''", '"""') else text[j]
    k = j + len(quote)
    while k < len(text):
        if text.startswith(quote, k):
            return k + len(quote)
        ch = text[k]
        if ch == "\\":
            k += 2
        elif is_f and ch in "{}" and text[k + 1 : k + 2] == ch:
            k += 2
        elif is_f and ch == "{":
            k = _field_end(text, k)
        else:
            k += 1
    return k


def _field_end(text: str, i: int) -> int:
    """Index just past the f-string replacement field that opens at text[i] == '{'."""
    j = i + 1
    depth = 0
    in_spec = False
    while j < len(text):
        ch = text[j]
        if in_spec:
            if ch == "{":
                j = _field_end(text, j)
                continue
            if ch == "}":
                return j + 1
        elif ch in "'\"":
            j = _skip_string(text, j)
            continue
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0 and ch == "}":
                return j + 1
            depth = max(0, depth - 1)
        elif ch == ":" and depth == 0:
            in_spec = True
        j += 1
    return j


def _fstring_parts(body: str, raw: bool) -> list[tuple[bool, str]]:
    """Split an f-string body into (is_field, text) parts."""
    parts: list[tuple[bool, str]] = []
    start = i = 0
    while i < len(body):
        ch = body[i]
        if ch in "{}" and body[i + 1 : i + 2] == ch:
            i += 2
        elif ch == "{":
            end = _field_end(body, i)
            parts.append((False, body[start:i]))
            parts.append((True, body[i:end]))
            start = i = end
        elif ch == "\\" and not raw and body.startswith("N{", i + 1):
            # \N{NAME} is an escape, not a replacement field.
            close = body.find("}", i)
            i = len(body) if close < 0 else close + 1
        elif ch == "\\" and body[i + 1 : i + 2] == "\\":
            i += 2
        else:
            i += 1
    parts.append((False, body[start:]))
    return parts


class _Binder:
    def __init__(self, code: str, placeholders: list[Placeholder], resolver: Resolver) -> None:
        self.code = code
        self.placeholders = placeholders
        self.resolver = resolver
        self.cache: dict[tuple[str, str | None], str] = {}
        nonce = 0
        while f"sluice_ph{nonce}_" in code:
            nonce += 1
        self.prefix = f"_sluice_ph{nonce}_"
        self.marker_re = re.compile(re.escape(self.prefix) + r"(\d+)x_")
        pieces: list[str] = []
        position = 0
        for index, placeholder in enumerate(placeholders):
            pieces.append(code[position : placeholder.start])
            pieces.append(self.marker(index))
            position = placeholder.end
        pieces.append(code[position:])
        self.marked = "".join(pieces)

    def marker(self, index: int) -> str:
        return f"{self.prefix}{index}x_"

    def fail(self, placeholder: Placeholder, why: str) -> BindingError:
        line = self.code.count("\n", 0, placeholder.start) + 1
        text = self.code[placeholder.start : placeholder.end]
        return BindingError(f"cannot bind {text} on line {line} of the Python code: {why}")

    def value(self, index: int) -> str:
        placeholder = self.placeholders[index]
        if placeholder.ident:
            raise self.fail(placeholder, "':ident' is only meaningful in SQL node code")
        value = self.cache.get(placeholder.key)
        if value is None:
            value = self.resolver.resolve(placeholder.path, placeholder.default)
            self.cache[placeholder.key] = value
        return value

    def bind(self) -> str:
        _parse(self.marked, "the Python code does not parse")
        lines = self.marked.split("\n")
        starts = [0]
        for line in lines[:-1]:
            starts.append(starts[-1] + len(line) + 1)
        # Split on "\n" only, exactly as the line offsets above do.
        readline = io.StringIO(self.marked, newline="\n").readline
        try:
            tokens = list(tokenize.generate_tokens(readline))
        except (tokenize.TokenError, SyntaxError) as error:
            raise BindingError(f"the Python code does not tokenize: {error}") from error

        def offset(position: tuple[int, int]) -> int:
            return starts[position[0] - 1] + position[1]

        edits: list[tuple[int, int, str]] = []
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if token.type in _LAYOUT_TOKENS:
                index += 1
                continue
            start, end = offset(token.start), offset(token.end)
            if _FSTRING_START is not None and token.type == _FSTRING_START:
                depth = 0
                while True:
                    if tokens[index].type == _FSTRING_START:
                        depth += 1
                    elif tokens[index].type == _FSTRING_END:
                        depth -= 1
                        if depth == 0:
                            break
                    index += 1
                end = offset(tokens[index].end)
                text = self.marked[start:end]
                if self.marker_re.search(text):
                    edits.append((start, end, self.literal(text)))
            elif token.type == tokenize.STRING:
                if self.marker_re.search(token.string):
                    edits.append((start, end, self.literal(token.string)))
            elif token.type == tokenize.COMMENT:
                restored = self.marker_re.sub(self.original, token.string)
                if restored != token.string:
                    edits.append((start, end, restored))
            elif token.type == tokenize.NAME and self.marker_re.fullmatch(token.string):
                edits.append((start, end, repr(self.value(self.index_of(token.string)))))
            elif match := self.marker_re.search(token.string):
                raise self.fail(
                    self.placeholders[int(match.group(1))],
                    "it is glued to a name or number; separate it or put it in a string",
                )
            index += 1

        pieces: list[str] = []
        position = 0
        for start, end, text in edits:
            pieces.append(self.marked[position:start])
            pieces.append(text)
            position = end
        pieces.append(self.marked[position:])
        bound = "".join(pieces)
        if self.marker_re.search(bound):
            raise BindingError("a placeholder in the Python code was not bound")
        _parse(bound, "the bound Python code does not parse")
        return bound

    def index_of(self, marker: str) -> int:
        match = self.marker_re.fullmatch(marker)
        assert match is not None
        return int(match.group(1))

    def original(self, match: re.Match[str]) -> str:
        placeholder = self.placeholders[int(match.group(1))]
        return self.code[placeholder.start : placeholder.end]

    def literal(self, text: str) -> str:
        """The string literal `text` with every marker in it replaced by its escaped value."""
        head = _STRING_START_RE.match(text)
        assert head is not None
        prefix, quote = head.group("prefix"), head.group("quote")
        flags = prefix.lower()
        raw, is_bytes, is_f = "r" in flags, "b" in flags, "f" in flags
        body = text[len(prefix) + len(quote) : len(text) - len(quote)]
        parts = _fstring_parts(body, raw) if is_f else [(False, body)]
        for is_field, part in parts:
            if is_field and (match := self.marker_re.search(part)):
                raise self.fail(
                    self.placeholders[int(match.group(1))],
                    "it is inside an f-string replacement field; assign it to a variable first",
                )
        if raw and not all(
            self.fits_raw(part, match, quote, is_bytes=is_bytes)
            for _, part in parts
            for match in self.marker_re.finditer(part)
        ):
            return self.unraw(prefix, quote, parts, is_bytes=is_bytes, is_f=is_f)
        out: list[str] = [prefix, quote]
        for is_field, part in parts:
            if is_field:
                out.append(part)
                continue
            position = 0
            for match in self.marker_re.finditer(part):
                before = part[position : match.start()]
                trailing = len(before) - len(before.rstrip("\\"))
                if trailing % 2 and not raw:
                    # `\${x}` was an unknown escape meaning a backslash; keep that meaning
                    # rather than let the backslash pair up with the value's first character.
                    before += "\\"
                out.append(before)
                value = self.value(int(match.group(1)))
                if raw:
                    out.append(value.translate({123: "{{", 125: "}}"}) if is_f else value)
                else:
                    out.append(_escape(value, quote, is_bytes=is_bytes, fstring=is_f))
                position = match.end()
            out.append(part[position:])
        out.append(quote)
        return "".join(out)

    def fits_raw(self, part: str, match: re.Match[str], quote: str, *, is_bytes: bool) -> bool:
        value = self.value(int(match.group(1)))
        if not value:
            # An odd backslash before an empty value would pair up with what follows it.
            before = part[: match.start()]
            if (len(before) - len(before.rstrip("\\"))) % 2:
                return False
        return _fits_raw(value, quote, is_bytes=is_bytes)

    def unraw(
        self, prefix: str, quote: str, parts: list[tuple[bool, str]], *, is_bytes: bool, is_f: bool
    ) -> str:
        """Rewrite a raw literal as a non-raw one with the same meaning plus the values."""
        out: list[str] = [prefix.replace("r", "").replace("R", ""), quote]
        for is_field, part in parts:
            if is_field:
                if "\\" in part:
                    raise BindingError(
                        "cannot rewrite a raw f-string whose replacement field holds a backslash"
                    )
                out.append(part)
                continue
            position = 0
            for match in [*self.marker_re.finditer(part), None]:
                chunk = part[position : match.start() if match else len(part)]
                # Source newlines inside a raw literal reach the string as plain "\n".
                chunk = chunk.replace("\r\n", "\n").replace("\r", "\n")
                if is_f:
                    chunk = chunk.replace("{{", "{").replace("}}", "}")
                out.append(_escape(chunk, quote, is_bytes=is_bytes, fstring=is_f))
                if match is None:
                    break
                value = self.value(int(match.group(1)))
                out.append(_escape(value, quote, is_bytes=is_bytes, fstring=is_f))
                position = match.end()
        out.append(quote)
        return "".join(out)


def _parse(code: str, what: str) -> None:
    with warnings.catch_warnings():
        # Invalid escape sequences warn at parse time; running the node reports them anyway.
        warnings.simplefilter("ignore")
        try:
            ast.parse(code)
        except SyntaxError as error:
            raise BindingError(f"{what}: {error.msg} (line {error.lineno})") from error


def bind_python(code: str, resolver: Resolver) -> str:
    """Return Python `code` with every placeholder bound as literal data.

    Raises MissingPath for a placeholder that does not resolve and BindingError for code that
    does not parse or a placeholder that cannot be bound safely.
    """
    placeholders = find_placeholders(code, resolver.resolvable)
    if not placeholders:
        return code
    refuse_reparsed(code, "python", resolver.resolvable)
    return _Binder(code, placeholders, resolver).bind()
