"""The chaos suite: every test is marked `chaos`, and the scenarios' summary lines close the run."""

from __future__ import annotations

import pytest

from tests.support.chaos import SUMMARIES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in item.nodeid:
            item.add_marker(pytest.mark.chaos)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARIES:
        terminalreporter.section("chaos summary")
        for line in SUMMARIES:
            terminalreporter.write_line(line)
