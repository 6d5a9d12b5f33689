"""Named SQL blocks loaded from `.sql` files next to the module that runs them.

A file holds blocks introduced by `-- name: <query_name>`; the text up to the next marker is the
query. Files are read once per process.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path

_MARKER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class Queries(Mapping[str, str]):
    """The named queries of one `.sql` file; a missing name is a KeyError naming the file."""

    def __init__(self, path: Path, blocks: dict[str, str]) -> None:
        self._path = path
        self._blocks = blocks

    def __getitem__(self, name: str) -> str:
        try:
            return self._blocks[name]
        except KeyError:
            raise KeyError(f"no query {name!r} in {self._path.name}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)


def parse(text: str, origin: str = "<sql>") -> dict[str, str]:
    """Split a `.sql` text into its named blocks."""
    marks = list(_MARKER.finditer(text))
    if not marks:
        raise ValueError(f"{origin}: no '-- name:' blocks")
    blocks: dict[str, str] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        name = mark.group(1)
        if name in blocks:
            raise ValueError(f"{origin}: query {name!r} defined twice")
        body = text[mark.end() : end].strip()
        if not body:
            raise ValueError(f"{origin}: query {name!r} is empty")
        blocks[name] = body
    return blocks


@cache
def load(module_file: str, stem: str | None = None) -> Queries:
    """Load `<stem>.sql` beside `module_file` (default: the module's own name)."""
    here = Path(module_file)
    path = here.with_name(f"{stem or here.stem}.sql")
    return Queries(path, parse(path.read_text(encoding="utf-8"), path.name))


def all_query_files(*roots: Path) -> list[Path]:
    """Every query file under the given package roots (migrations excluded)."""
    found: list[Path] = []
    for root in roots:
        found.extend(p for p in root.rglob("*.sql") if "migrations" not in p.parts)
    return sorted(found)
