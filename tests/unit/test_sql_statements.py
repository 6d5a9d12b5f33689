"""Splitting SQL scripts: semicolons count only outside constants, identifiers and comments."""

from __future__ import annotations

import pytest

from services.executor.runners.statements import split_statements


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("SELECT 1", ["SELECT 1"]),
        ("SELECT 1; SELECT 2;", ["SELECT 1", " SELECT 2"]),
        ("SELECT ';'; SELECT 2", ["SELECT ';'", " SELECT 2"]),
        ("SELECT 'it''s;'; SELECT 2", ["SELECT 'it''s;'", " SELECT 2"]),
        ("SELECT E'\\';'; SELECT 2", ["SELECT E'\\';'", " SELECT 2"]),
        ("SELECT e'a\\\\'; SELECT 2", ["SELECT e'a\\\\'", " SELECT 2"]),
        ("SELECT '\\'; SELECT 2", ["SELECT '\\'", " SELECT 2"]),
        ('SELECT 1 AS "a;b"; SELECT 2', ['SELECT 1 AS "a;b"', " SELECT 2"]),
        ("SELECT $$;$$; SELECT 2", ["SELECT $$;$$", " SELECT 2"]),
        ("SELECT $f$ $$;$$ $f$; SELECT 2", ["SELECT $f$ $$;$$ $f$", " SELECT 2"]),
        ("SELECT $1; SELECT 2", ["SELECT $1", " SELECT 2"]),
        ("SELECT a$b$c; SELECT 2", ["SELECT a$b$c", " SELECT 2"]),
        ("SELECT 1 -- ; no\n; SELECT 2", ["SELECT 1 -- ; no\n", " SELECT 2"]),
        ("SELECT /* ; /* ; */ ; */ 1; SELECT 2", ["SELECT /* ; /* ; */ ; */ 1", " SELECT 2"]),
        ("SELECT 1;\n-- trailing comment\n", ["SELECT 1"]),
        (";;  ;", []),
        ("SELECT 'unterminated; SELECT 2", ["SELECT 'unterminated; SELECT 2"]),
        (
            "CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END $body$ LANGUAGE plpgsql;"
            " SELECT f()",
            [
                "CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END $body$ "
                "LANGUAGE plpgsql",
                " SELECT f()",
            ],
        ),
    ],
)
def test_split(script: str, expected: list[str]) -> None:
    assert split_statements(script) == expected
