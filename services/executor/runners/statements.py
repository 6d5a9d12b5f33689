"""Splitting a SQL script into its statements, so the last one can report its first row.

Semicolons separate statements only outside string constants ('...', E'...' with backslash
escapes), quoted identifiers ("..."), dollar-quoted bodies ($$...$$, $tag$...$tag$), line
comments (-- ...) and block comments (/* ... */, nested as PostgreSQL nests them). Pure.
"""

from __future__ import annotations

import re

__all__ = ["split_statements"]

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$]")


def _skip_quoted(sql: str, start: int, quote: str, backslashes: bool) -> int:
    """Index just past the constant opened at `start` (the quote); the end when unterminated."""
    i = start + 1
    while i < len(sql):
        char = sql[i]
        if backslashes and char == "\\":
            i += 2
            continue
        if char == quote:
            if i + 1 < len(sql) and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return len(sql)


def _skip_block_comment(sql: str, start: int) -> int:
    depth = 0
    i = start
    while i < len(sql):
        pair = sql[i : i + 2]
        if pair == "/*":
            depth += 1
            i += 2
        elif pair == "*/":
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(sql)


def _is_meaningful(text: str) -> bool:
    """True when `text` holds more than whitespace and comments."""
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end + 1
        elif text.startswith("/*", i):
            i = _skip_block_comment(text, i)
        else:
            return True
    return False


def split_statements(sql: str) -> list[str]:
    """The statements of `sql`, each as written (without its terminating semicolon); pieces
    holding only whitespace and comments are dropped."""
    pieces: list[str] = []
    start = 0
    i = 0
    n = len(sql)
    while i < n:
        char = sql[i]
        if char == "'":
            escaped = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _IDENT_CHAR.match(sql[i - 2]))
            i = _skip_quoted(sql, i, "'", escaped)
        elif char == '"':
            i = _skip_quoted(sql, i, '"', False)
        elif char == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif char == "/" and sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif char == "$" and not (i > 0 and _IDENT_CHAR.match(sql[i - 1])):
            tag = _DOLLAR_TAG.match(sql, i)
            if tag is None:
                i += 1
                continue
            end = sql.find(tag.group(0), tag.end())
            i = n if end < 0 else end + len(tag.group(0))
        elif char == ";":
            pieces.append(sql[start:i])
            i += 1
            start = i
        else:
            i += 1
    pieces.append(sql[start:])
    return [piece for piece in pieces if _is_meaningful(piece)]
