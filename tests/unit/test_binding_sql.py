"""SQL binding: bind parameters outside literals, doubled quotes inside."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.params.binding import BindingError
from shared.params.binding.sql import SqlBinding, bind_sql
from shared.params.paths import MissingPath
from shared.params.resolution import Resolution, ResolutionInput, resolve_parameters
from tests.unit.test_binding_exec import CORPUS_NAMES, injection_corpus


def resolution(values: dict[str, str] | None = None) -> Resolution:
    """Parameters whose values come from the trigger message, so they are taken as they are."""
    values = values if values is not None else {"p": "value", "q": "other"}
    return resolve_parameters(
        ResolutionInput(
            workflow_type="triggered",
            cyctime=datetime(2026, 3, 10, 8, 0, tzinfo=UTC),
            workflow_name="wf",
            instance_id=1,
            version=1,
            node_name="node",
            node_params={name: f"${{workflow.triggerMessage.{name}}}" for name in values},
            trigger_message=values,
        )
    )


@pytest.mark.parametrize(
    ("code", "value", "query", "args"),
    [
        ("select ${p}", "v", "select $1", ["v"]),
        (
            "select * from t where a = ${p} and b = ${q}",
            "v",
            "select * from t where a = $1 and b = $2",
            ["v", "other"],
        ),
        ("select ${p}, ${p}", "v", "select $1, $2", ["v", "v"]),
        ("select ${p}::int + 1", "41", "select $1::int + 1", ["41"]),
        ("select (${p})", "v", "select ($1)", ["v"]),
        ("select '${p}'", "it's", "select 'it''s'", []),
        ("select 'a ${p} b'", "'); DROP TABLE x; --", "select 'a ''); DROP TABLE x; -- b'", []),
        ("select 'x''${p}'''", "'", "select 'x'''''''", []),
        ("select '${p}'", "back\\slash", "select 'back\\slash'", []),
        ("select E'${p}'", "it's \\n", "select E'it''s \\\\n'", []),
        ("select e'\\'${p}'", "\\'", "select e'\\'\\\\'''", []),
        ("select N'${p}'", "'", "select N''''", []),
        ('select 1 as "${p}"', 'a"b', 'select 1 as "a""b"', []),
        ('select 1 as "${p:ident}"', 'a"b', 'select 1 as "a""b"', []),
        ("select * from ${p:ident}", 'we"ird', 'select * from "we""ird"', []),
        (
            "create table ${p:ident} (x int)",
            "t; drop table y",
            'create table "t; drop table y" (x int)',
            [],
        ),
        ("select ${p:ident}, ${p}", "c", 'select "c", $1', ["c"]),
        (
            "select ${HOME}, '${HOME}', $$${HOME}$$",
            "v",
            "select ${HOME}, '${HOME}', $$${HOME}$$",
            [],
        ),
        ("-- ${p}\nselect ${p}", "v", "-- ${p}\nselect $1", ["v"]),
        (
            "select /* ${p} /* nested ${p} */ still ${p} */ ${p}",
            "v",
            "select /* ${p} /* nested ${p} */ still ${p} */ $1",
            ["v"],
        ),
        ("select $$ it's $$, ${p}", "v", "select $$ it's $$, $1", ["v"]),
        ("select $tag$ $$ ' $tag$, '${p}'", "v", "select $tag$ $$ ' $tag$, 'v'", []),
        ("select a$b, ${p}", "v", "select a$b, $1", ["v"]),
        ("select x::text, ${p}", "v", "select x::text, $1", ["v"]),
        ("select '${workflow.triggerMessage.nope:-n/a}'", "v", "select 'n/a'", []),
    ],
)
def test_bound_sql(code: str, value: str, query: str, args: list[str]) -> None:
    assert bind_sql(code, resolution({"p": value, "q": "other"})) == SqlBinding(query, args)


def literal_body(query: str, prefix: str, suffix: str) -> str:
    """The inside of the one literal in `query`, checked to be closed only by `suffix`."""
    assert query.startswith(prefix) and query.endswith(suffix)
    body = query[len(prefix) : len(query) - len(suffix)]
    # Every quote inside is doubled, so the literal cannot end early.
    assert "'" not in body.replace("''", "")
    return body


@pytest.mark.parametrize("name", [name for name in CORPUS_NAMES if name != "invalid-utf8"])
def test_corpus_stays_inside_literals_and_parameters(name: str) -> None:
    value = injection_corpus()[name]
    code = "select '${p}' as a, E'${p}' as b, \"${p}\" as c, ${p} as d, ${p:ident} as e"
    binding = bind_sql(code, resolution({"p": value}))
    doubled = value.replace("'", "''")
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    ident = value.replace('"', '""')
    assert binding.query == (
        f"select '{doubled}' as a, E'{escaped}' as b, \"{ident}\" as c, $1 as d, \"{ident}\" as e"
    )
    assert binding.args == [value]
    assert (
        literal_body(bind_sql("select '${p}'", resolution({"p": value})).query, "select '", "'")
        == doubled
    )


@pytest.mark.parametrize(
    ("code", "value", "reason"),
    [
        ("do $$ begin raise notice '${p}'; end $$", "v", "it is inside a dollar-quoted body"),
        ("select $f$${p}$f$", "v", "it is inside a dollar-quoted body"),
        ("select B'${p}'", "1", "it is inside a bit-string literal"),
        ("select x'${p}'", "1", "it is inside a bit-string literal"),
        ("select U&'${p}' UESCAPE 'a'", "v", "UESCAPE character is not valid"),
        ("select U&'${p}' UESCAPE E'!'", "v", "UESCAPE clause is not a plain"),
        ("select '${p:ident}'", "v", "':ident' cannot be used inside a string literal"),
        ("select E'${p:ident}'", "v", "':ident' cannot be used inside a string literal"),
        ("select x${p}", "v", "it is glued to a word"),
        ("select ${p}1", "v", "it is glued to a word"),
        ("select ${p}", "a\x00b", "its value holds NUL or bytes that are not UTF-8"),
        ("select '${p}'", "\udcff", "its value holds NUL or bytes that are not UTF-8"),
    ],
)
def test_unbindable_placeholders(code: str, value: str, reason: str) -> None:
    with pytest.raises(BindingError) as caught:
        bind_sql(code, resolution({"p": value}))
    message = str(caught.value)
    assert message.startswith("cannot bind ${p")
    assert "on line 1 of the SQL code" in message
    assert reason in message


def test_positional_parameters_in_the_code_are_rejected() -> None:
    with pytest.raises(BindingError, match="positional parameters"):
        bind_sql("select $1, ${p}", resolution())


def test_code_without_placeholders_is_unchanged() -> None:
    code = "select $1, '${HOME}' -- anything $$"
    assert bind_sql(code, resolution()) == SqlBinding(code, [])


def test_missing_trigger_path_fails_naming_it() -> None:
    with pytest.raises(MissingPath) as caught:
        bind_sql("select ${workflow.triggerMessage.data.s3.object.key}", resolution())
    assert caught.value.path == "workflow.triggerMessage.data.s3.object.key"


def test_error_names_the_line() -> None:
    with pytest.raises(BindingError, match=r"cannot bind \$\{p\} on line 3 of the SQL code"):
        bind_sql("select 1;\nselect ${q};\ndo $$ ${p} $$", resolution())


@pytest.mark.parametrize(
    ("code", "value", "query"),
    [
        # A literal continued over a newline keeps the kind of its first segment.
        ("select E'a'\n'${p}'", "\\'; x", "select E'a'\n'\\\\''; x'"),
        ("select E'a' -- note\n  \n'${p}'", "\\", "select E'a' -- note\n  \n'\\\\'"),
        ("select 'a'\n'${p}'", "\\'", "select 'a'\n'\\'''"),
        # Without a newline the second literal is a new (standard) one.
        ("select E'a' '${p}'", "\\", "select E'a' '\\'"),
        ("select e'\\''\n'${p}'", "\\", "select e'\\''\n'\\\\'"),
        # Unicode escapes: every character escaped with the literal's escape character.
        ("select U&'${p}'", "a'\\", "select U&'\\+000061\\+000027\\+00005C'"),
        ("select u&'x${p}' UESCAPE '!'", "é", "select u&'x!+0000E9' UESCAPE '!'"),
        (
            "select U&'${p}'\n'y' /* c */ uescape\n'#'",
            "'",
            "select U&'#+000027'\n'y' /* c */ uescape\n'#'",
        ),
        ("select U&\"${p}\" UESCAPE '!'", 'a"', "select U&\"!+000061!+000022\" UESCAPE '!'"),
        # A number ends where a dollar quote starts; `1e'..'` may be an escape string.
        ("select 1$$ ${p} $$", "v", None),
        ("select 1e'${p}'", "\\", "select 1e'\\\\'"),
        ("select ${p}\r-- ${p}\r, ${p}", "v", "select $1\r-- ${p}\r, $2"),
    ],
)
def test_literal_forms(code: str, value: str, query: str | None) -> None:
    if query is None:
        with pytest.raises(BindingError, match="dollar-quoted"):
            bind_sql(code, resolution({"p": value}))
        return
    assert bind_sql(code, resolution({"p": value})).query == query


def test_code_that_changes_standard_conforming_strings_is_rejected() -> None:
    code = "set standard_conforming_strings = off;\nselect '${p}'"
    with pytest.raises(BindingError, match=r"on line 2 .* mentions standard_conforming_strings"):
        bind_sql(code, resolution())
    # A bind parameter does not depend on it.
    assert bind_sql(
        "select set_config('standard_conforming_strings', 'on', false), ${p}", resolution()
    ).args == ["value"]
