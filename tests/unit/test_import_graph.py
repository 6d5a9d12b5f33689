"""Services meet only in PostgreSQL, and runtime code never imports the dev and test servers.

Every module's imports are read with `ast`: `import` and `from ... import` statements at any
depth (lazy imports inside functions included) and `importlib.import_module("...")` /
`__import__("...")` calls with a string literal, so importing by string is no way around it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "shared")

# The dev and test servers and their wiring: only the dev entry and they themselves import them.
# Update this list when they move.
DEV_MODULES: tuple[str, ...] = ("shared.embedded", "services.storage_listener.dev_buckets")
# Entry wiring directly in services/: it starts the services, so it may import any of them.
ENTRY_MODULES: tuple[str, ...] = ("services.cli", "services.registry", "services.dev")
# Only the dev entry may import the dev servers (ENTRY_MODULES minus the production entry).
DEV_ENTRY_MODULES: tuple[str, ...] = ("services.dev",)
# `python -m services.X` starts the service through the CLI, as `sluice run X` does.
MAIN_MAY_IMPORT: tuple[str, ...] = ("services.cli",)
# Known dev imports from runtime modules, each to be removed when the dev servers move out.
KNOWN_DEV_IMPORTS: frozenset[tuple[str, str]] = frozenset(
    {("services.storage_listener.commands", "shared.embedded.s3")}
)


_MODULE_PATH = re.compile(r"(services|shared)(\.\w+)+")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # what it imports, dotted and absolute
    line: int


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """Resolve `from ..x import y` relative to `module`."""
    if level == 0:
        return name or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every module `source` imports, at any depth, including module paths handed to a call as
    string literals (`importlib.import_module`, `__import__`, or a helper of one's own)."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module)
            found.append(Import(module, base, node.lineno))
            # `from services import executor` imports the package services.executor.
            found += [Import(module, f"{base}.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Call):
            # importlib.import_module("services.x"), __import__, or any helper handed a module
            # path as a literal: a string naming a project module is an import.
            found += [
                Import(module, arg.value, node.lineno)
                for arg in [*node.args, *(k.value for k in node.keywords)]
                if isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and _MODULE_PATH.fullmatch(arg.value)
            ]
    return found


def service_of(module: str) -> str | None:
    """`services.executor.runners.shell` -> `executor`; entry modules and shared -> None."""
    parts = module.split(".")
    if parts[0] != "services" or len(parts) < 2 or _within(module, ENTRY_MODULES):
        return None
    if len(parts) == 2 and not (ROOT / "services" / parts[1] / "__init__.py").is_file():
        return None  # another module directly in services/: entry wiring too
    return parts[1]


def violations(found: list[Import]) -> list[str]:
    """What breaks the rules, one line each naming the module, line and import."""
    bad: dict[tuple[str, int, str], str] = {}
    for imp in found:
        for rule in _broken(imp):
            # `from services.y.m import a, b` breaks a rule once, not once per name.
            bad.setdefault(
                (imp.module, imp.line, rule),
                f"{imp.module} (line {imp.line}) imports {imp.target}: {rule}",
            )
    return list(bad.values())


def _broken(imp: Import) -> list[str]:
    rules: list[str] = []
    own = service_of(imp.module)
    if own is not None and imp.target.startswith("services."):
        other = imp.target.split(".")[1]
        main_ok = imp.module.endswith(".__main__") and _within(imp.target, MAIN_MAY_IMPORT)
        if other != own and not main_ok:
            rules.append(f"services/{own} may not import services/{other}")
    if (
        _within(imp.target, DEV_MODULES)
        and not _within(imp.module, DEV_MODULES)
        and not _within(imp.module, DEV_ENTRY_MODULES)
        and not any(imp.module == m and _within(imp.target, (t,)) for m, t in KNOWN_DEV_IMPORTS)
    ):
        rules.append("runtime code may not import the dev servers")
    if imp.module.startswith("shared.") and imp.target.startswith("services."):
        rules.append("shared/ may not import a service")
    return rules


def project_modules() -> list[tuple[str, Path]]:
    modules = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            modules.append((".".join(parts), path))
    return modules


def test_the_project_has_modules_to_check() -> None:
    names = {name for name, _ in project_modules()}
    assert {"services.api.app", "services.executor.service", "shared.intake"} <= names


def test_no_service_imports_another_and_runtime_code_no_dev_server() -> None:
    found: list[Import] = []
    for name, path in project_modules():
        source = path.read_text(encoding="utf-8")
        found += imports_of(source, name, is_package=path.name == "__init__.py")
    assert not violations(found), "\n".join(violations(found))


def test_the_listed_dev_modules_exist() -> None:
    """When the dev servers move, the rule must follow them, not guard an empty path."""
    names = {name for name, _ in project_modules()}
    for dev in DEV_MODULES:
        assert dev in names, f"{dev} does not exist: update DEV_MODULES to where it moved"


def test_known_dev_imports_still_exist() -> None:
    """An exception left behind after its import is gone would let the next one in unseen."""
    found = {
        (imp.module, imp.target)
        for name, path in project_modules()
        for imp in imports_of(path.read_text(encoding="utf-8"), name)
    }
    for module, target in KNOWN_DEV_IMPORTS:
        assert any(m == module and _within(t, (target,)) for m, t in found), (
            f"{module} no longer imports {target}: remove it from KNOWN_DEV_IMPORTS"
        )


PLANTED = [
    (
        "services.api.routes.runs",
        "from services.scheduler.backfill import create_backfill\n",
        "services/api may not import services/scheduler",
    ),
    (
        "services.scheduler.commands",
        "def f():\n    from services.api import client\n    return client\n",
        "services/scheduler may not import services/api",
    ),
    (
        "services.api.routes.instances",
        "import importlib\nop = importlib.import_module('services.executor.operations')\n",
        "services/api may not import services/executor",
    ),
    (
        "services.api.routes.runs",
        "f = optional.function('services.scheduler.backfill', 'create_backfill', 'backfill')\n",
        "services/api may not import services/scheduler",
    ),
    (
        "services.notifier.service",
        "from importlib import import_module\nimport_module('services.cli')\n",
        "services/notifier may not import services/cli",
    ),
    (
        "services.executor.service",
        "import services.kafka_listener.service as k\n",
        "services/executor may not import services/kafka_listener",
    ),
    (
        "services.executor.service",
        "from services import registry\n",
        "services/executor may not import services/registry",
    ),
    (
        "services.storage_listener.service",
        "from shared.embedded.s3 import EmbeddedS3\n",
        "runtime code may not import the dev servers",
    ),
    (
        "shared.intake",
        "from services.storage_listener.dev_buckets import wire\n",
        "runtime code may not import the dev servers",
    ),
    (
        "shared.intake",
        "from services.executor import operations\n",
        "shared/ may not import a service",
    ),
]


@pytest.mark.parametrize(("module", "source", "message"), PLANTED)
def test_a_planted_violation_is_reported(module: str, source: str, message: str) -> None:
    found = violations(imports_of(source, module))
    assert any(message in line and module in line for line in found), found


ALLOWED = [
    ("services.executor.service", "from services.executor.logs import LogBuffer\n"),
    ("services.executor.runners.shell", "from . import base\nfrom ..logs import LogBuffer\n"),
    ("services.executor.__main__", "from services.cli import main\n"),
    ("services.cli", "import importlib\nimportlib.import_module('services.api.commands')\n"),
    ("services.dev", "from shared.embedded.kafka import EmbeddedKafka\n"),
    ("shared.embedded.s3", "from shared.embedded.process import ChildServer\n"),
    ("services.api.routes.runs", "from shared.operations.backfills import create_backfill\n"),
]


@pytest.mark.parametrize(("module", "source"), ALLOWED)
def test_what_the_rules_allow(module: str, source: str) -> None:
    assert violations(imports_of(source, module)) == []


def test_relative_imports_resolve_against_the_importing_module() -> None:
    found = imports_of("from ..scheduler import ticks\n", "services.api.routes")
    assert "services.scheduler.ticks" in {i.target for i in found}
    assert any("services/api may not import services/scheduler" in v for v in violations(found))
