"""The line a stopping `sluice dev` prints: what it waits for, how long, how not to wait."""

from __future__ import annotations

from services.dev.command import postgres_lines, stopping_line


def test_names_the_running_nodes_the_wait_and_the_way_out() -> None:
    line = stopping_line([(12, "load"), (13, "report")], 2, 30)
    assert line == (
        "stopping: waiting up to 30s for 2 running node(s) to finish "
        "(instance/node: 12/load, 13/report); press Ctrl-C again to stop at once"
    )


def test_counts_the_nodes_it_does_not_name() -> None:
    line = stopping_line([(1, "a")], 7, 2.5)
    assert "up to 2.5s for 7 running node(s)" in line and "(instance/node: 1/a and 6 more)" in line


def test_nothing_running_is_said_too() -> None:
    assert stopping_line([], 0, 30) == "stopping (no nodes running)"


def test_the_banner_says_where_the_postgres_socket_is() -> None:
    lines = postgres_lines("postgresql://postgres:@/postgres?host=/srv/app/.sluice/pg")
    assert lines[0] == "  PostgreSQL: postgresql://postgres:@/postgres?host=/srv/app/.sluice/pg"
    assert "Unix socket in /srv/app/.sluice/pg, user postgres" in lines[1]
    assert lines[2].strip() == "psql -h /srv/app/.sluice/pg -U postgres sluice_examples)"
