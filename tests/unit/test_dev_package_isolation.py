"""Runtime code never imports the dev package (`services.dev`: `sluice dev` and its servers).

The embedded servers and the dev bucket wiring live there so that a production image, and every
service in it, runs without them. The check reads the source with `ast`, so it sees imports inside
functions too, and strings handed to `importlib.import_module` (how a string import would dodge
a plain `import` check).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEV = "services.dev"


def _is_dev(module: str) -> bool:
    return module == DEV or module.startswith(DEV + ".")


def _absolute(module: str | None, level: int, package: str) -> str:
    """The absolute name a `from ... import` refers to, relative ones resolved from `package`."""
    if not level:
        return module or ""
    parts = package.split(".")
    base = parts[: len(parts) - level + 1]
    return ".".join([*base, module] if module else base)


def dev_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """`line: imported name` of every reference of `module`'s source to the dev package."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            # `from services import dev` names the package as an imported attribute.
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Call):
            names = [
                arg.value
                for arg in node.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            ]
        else:
            continue
        found.extend((node.lineno, name) for name in names if _is_dev(name))
    return [f"{line}: {name}" for line, name in sorted(set(found))]


def runtime_modules() -> list[tuple[Path, str]]:
    """Every module of `shared/` and of each service package `services/<service>/`."""
    roots = [ROOT / "shared"]
    roots += [
        path
        for path in sorted((ROOT / "services").iterdir())
        if path.is_dir() and (path / "__init__.py").exists() and path.name != "dev"
    ]
    modules: list[tuple[Path, str]] = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules.append((path, dotted))
    return modules


def test_the_runtime_library_and_every_service_are_checked() -> None:
    names = {dotted for _, dotted in runtime_modules()}
    assert "shared.intake" in names
    assert "services.storage_listener.service" in names
    assert "services.executor.runners.shell" in names
    assert not any(_is_dev(name) for name in names)


def test_no_runtime_module_imports_the_dev_package() -> None:
    offenders = {
        str(path.relative_to(ROOT)): hits
        for path, dotted in runtime_modules()
        if (
            hits := dev_imports(
                path.read_text("utf-8"), dotted, is_package=path.name == "__init__.py"
            )
        )
    }
    assert offenders == {}, "runtime code imports the dev package (services.dev)"


PLANTED = [
    "import services.dev",
    "import services.dev.servers.s3 as s3",
    "from services.dev import buckets",
    "from services.dev.servers.kafka import EmbeddedKafka",
    "from services import dev",
    "def later():\n    from services.dev.ports import configured",
    "import importlib\nimportlib.import_module('services.dev.command')",
    "__import__('services.dev')",
    "from ..dev import ports",
    "from .. import dev",
]


@pytest.mark.parametrize("source", PLANTED)
def test_a_planted_import_of_the_dev_package_is_found(source: str) -> None:
    assert dev_imports(source, "services.storage_listener.poll") != []


@pytest.mark.parametrize(
    "source",
    [
        "import services.devices",
        "from services.storage_listener import aws",
        "from shared.settings import DEV_S3_ACCESS_KEY",
        "from . import dev_notes",
        "text = 'services.dev is for sluice dev'",
        "from services import registry",
    ],
)
def test_a_clean_module_is_not_flagged(source: str) -> None:
    assert dev_imports(source, "services.storage_listener.poll") == []


def test_a_relative_import_resolves_from_the_package_of_an_init_module() -> None:
    # In services/storage_listener/__init__.py, `from .. import dev` is services.dev.
    source = "from .. import dev"
    assert dev_imports(source, "services.storage_listener", is_package=True) == ["1: services.dev"]
    assert dev_imports(source, "shared.db.pool") == []


def test_the_check_finds_a_planted_violation_in_a_module_on_disk(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("def wire():\n    from services.dev import buckets\n", "utf-8")
    assert dev_imports(planted.read_text("utf-8"), "shared.planted") == [
        "2: services.dev",
        "2: services.dev.buckets",
    ]
