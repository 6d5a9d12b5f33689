"""The README stays a short entry point and every relative link in the docs resolves."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6}) (.*)$")
VENV = "python3 -m venv .venv && .venv/bin/pip install -e"
SETUP_DEV = f"{VENV} '.[embedded]' && .venv/bin/sluice dev"
SETUP_TEST = f"{VENV} '.[dev]' && .venv/bin/pytest"


def _outside_fences(text: str) -> list[str]:
    """Lines that are not inside a fenced code block: links and headings there are code."""
    kept: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(line)
    return kept


def _fenced_blocks(text: str) -> list[str]:
    blocks: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _slug(title: str) -> str:
    """The anchor GitHub derives from a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """GitHub-style anchors of a Markdown text; repeated headings get -1, -2, ..."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in _outside_fences(text):
        match = HEADING.match(line)
        if match is None:
            continue
        base = _slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    """Relative links of one Markdown file whose file or #anchor does not exist."""
    text = path.read_text(encoding="utf-8")
    broken: list[str] = []
    for line in _outside_fences(text):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{target} (no such file)")
            elif anchor and linked.suffix == ".md":
                if anchor not in anchors(linked.read_text(encoding="utf-8")):
                    broken.append(f"{target} (no such anchor)")
    return broken


def test_anchor_rules_follow_github() -> None:
    text = "# A: `b` c\n## MinIO → webhook\n## Same\n## Same\n```\n# not a heading\n```\n"
    assert anchors(text) == {"a-b-c", "minio--webhook", "same", "same-1"}


def test_broken_link_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Top\n[ok](#top) [bad](#nope) [gone](other.md) [web](https://x.y/#z)\n")
    assert broken_links(page) == ["#nope (no such anchor)", "other.md (no such file)"]


def test_readme_is_short() -> None:
    size = README.stat().st_size
    assert size <= 16_000, f"README.md is {size} bytes; move reference material into docs/"


def test_readme_starts_with_the_two_commands() -> None:
    blocks = _fenced_blocks(README.read_text(encoding="utf-8"))
    assert blocks[:2] == [SETUP_DEV, SETUP_TEST]


def test_every_relative_link_resolves() -> None:
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    broken = {page.name: found for page in pages if (found := broken_links(page))}
    assert broken == {}
