"""Differential fuzzing of the binders: generated code x hostile values, run for real.

Hypothesis builds node code from the quoting contexts of each language (nested: words inside
command substitutions inside compound commands; literals inside f-strings, functions and class
bodies; literals continued over newlines, Unicode escapes, comments and dollar quotes around
them) and values from the injection corpus mixed with generated strings. Every bound result runs
in the real interpreter the executor uses (bash, this Python with `-I`, PostgreSQL through a node
connection); the value must arrive byte for byte and no canary file or dropped table may appear.
A placeholder the binder refuses is fine (refusal is safe) only where the test expects refusal.

CI runs a fixed seed and a bounded number of examples; `--hypothesis-profile=deep` runs thousands
(`hypothesis.event` records the contexts each run covered: `--hypothesis-show-statistics`).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.executor.runners.connect import postgres_params
from shared.db.connections import ResolvedConnection
from shared.params.binding import BindingError
from shared.params.binding.python import bind_python
from shared.params.binding.shell import bind_shell
from shared.params.binding.sql import bind_sql
from tests.unit.test_binding_exec import as_bytes, injection_corpus, resolution
from tests.unit.test_outputs_binding_exec import PLACEHOLDER, from_outputs

CANARY = "@CANARY@"
_DEEP = settings().max_examples > 1000


def fuzz_settings(ci_examples: int) -> settings:
    """A fixed seed and `ci_examples` examples, or the deep profile's count and fresh seeds."""
    return settings(
        max_examples=settings().max_examples if _DEEP else ci_examples,
        derandomize=not _DEEP,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            # The node connection is reset (TRUNCATE) by every example itself.
            HealthCheck.function_scoped_fixture,
        ],
    )


# -- hostile values -------------------------------------------------------------------------------

_SPECIALS = [*"'\"\\$`{}()[];&|<>#!*?~\n\r\t -/%:=EeUuNnBbXx&+0", "''", "$$", "*/", "/*"]
_FRAGMENTS = [
    f"; touch {CANARY} #",
    f"$(touch {CANARY})",
    f"`touch {CANARY}`",
    f"__import__('os').system('touch {CANARY}')",
    "'); DROP TABLE x; --",
    "\\'; DROP TABLE x; --",
    "$$; DROP TABLE x; --",
    "\nEOF\n",
    "${HOME}",
    "{0}{{x}}",
    "'''",
    '"""',
    "\\",
    "\\u0041\\x41\\101",
    "!+000041",
    "\u2028\U0001f600é",
]


def _corpus() -> list[str]:
    values = injection_corpus(CANARY)
    # The 1 MB value is covered by the listed tests; here it would only slow every example.
    values.pop("one-megabyte")
    return list(values.values())


def hostile_values(*, nul: bool, surrogates: bool) -> st.SearchStrategy[str]:
    """Corpus values, generated strings, and mixtures of corpus fragments and noise."""
    chars = st.characters(exclude_categories=["Cs"], exclude_characters="" if nul else "\x00")
    if surrogates:
        # Undecodable bytes reach node code as surrogate escapes.
        chars = st.one_of(chars, st.integers(0xDC80, 0xDCFF).map(chr))
    piece = st.one_of(st.sampled_from(_SPECIALS), st.sampled_from(_FRAGMENTS), chars)
    generated = st.lists(piece, max_size=12).map("".join)
    corpus = [v for v in _corpus() if (nul or "\x00" not in v)]
    if not surrogates:
        corpus = [v for v in corpus if not any(0xD800 <= ord(c) < 0xE000 for c in v)]
    return st.one_of(st.sampled_from(corpus), generated, st.text(chars, max_size=30))


def concrete(value: str, canary: Path) -> str:
    return value.replace(CANARY, str(canary))


# -- shell -----------------------------------------------------------------------------------------

Expect = Callable[[bytes], bytes]
Word = tuple[str, str, Expect]  # context name, code, expected output for a value


def _same(v: bytes) -> bytes:
    return v


_BASE_WORDS: list[Word] = [
    ("unquoted", "${p}", _same),
    ("double", '"${p}"', _same),
    ("single", "'${p}'", _same),
    ("ansi-c", "$'${p}'", _same),
    ("double-text", '"a ${p} b"', lambda v: b"a " + v + b" b"),
    ("single-text", "'a ${p} b'", lambda v: b"a " + v + b" b"),
    ("ansi-c-text", "$'a\\t${p}'", lambda v: b"a\t" + v),
    ("default", "${SLUICE_UNSET:-${p}}", _same),
    ("double-default", '"${SLUICE_UNSET:-${p}}"', _same),
    ("double-alternative", '"${HOME:+${p}}"', _same),
]


def _concat(words: list[Word]) -> Word:
    def expect(v: bytes) -> bytes:
        return b"".join(w[2](v) for w in words)

    return ("+".join(w[0] for w in words), "".join(w[1] for w in words), expect)


def _substituted(word: Word) -> Word:
    name, code, inner = word
    return (f"cmdsub({name})", f"\"$(printf '%s' {code})\"", lambda v: inner(v).rstrip(b"\n"))


def _backticked(word: Word) -> Word:
    name, code, inner = word
    return (f"backtick({name})", f"\"`printf '%s' {code}`\"", lambda v: inner(v).rstrip(b"\n"))


_words = st.recursive(
    st.sampled_from(_BASE_WORDS),
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(_concat),
        inner.map(_substituted),
    ),
    max_leaves=4,
)
_words_with_ticks = st.one_of(_words, st.sampled_from(_BASE_WORDS[:4]).map(_backticked))

Statement = tuple[str, str, Expect]


def _printf(word: Word) -> Statement:
    return (word[0], f"printf '%s' {word[1]}", word[2])


def _assigned(word: Word) -> Statement:
    return (f"assign({word[0]})", f"x={word[1]}; printf '%s' \"$x\"", word[2])


def _array(word: Word) -> Statement:
    return (f"array({word[0]})", f"arr=({word[1]}); printf '%s' \"${{arr[0]}}\"", word[2])


def _exported(word: Word) -> Statement:
    return (f"export({word[0]})", f"export y={word[1]}; printf '%s' \"$y\"", word[2])


def _printf_v(word: Word) -> Statement:
    return (f"printf-v({word[0]})", f"printf -v y '%s' {word[1]}; printf '%s' \"$y\"", word[2])


def _local(word: Word) -> Statement:
    code = f"g() {{ local z={word[1]}; printf '%s' \"$z\"; }}; g"
    return (f"local({word[0]})", code, word[2])


def _heredoc(parts: list[str]) -> Statement:
    body = "".join(parts)

    def expect(v: bytes) -> bytes:
        return body.replace("${p}", "\0").encode().replace(b"\0", v) + b"\n"

    return ("heredoc", f"cat <<EOF\n{body}\nEOF", expect)


def _here_string(word: Word) -> Statement:
    return (f"herestring({word[0]})", f"cat <<<{word[1]}", lambda v: word[2](v) + b"\n")


_COMPOUNDS: list[tuple[str, Callable[[str], str]]] = [
    ("plain", lambda s: s),
    ("subshell", lambda s: f"( {s} )"),
    ("group", lambda s: f"{{ {s}; }}"),
    ("if", lambda s: f"if true; then\n  {s}\nfi"),
    ("function", lambda s: f"f() {{\n  {s}\n}}\nf"),
    ("case", lambda s: f"case a in\n  a) {s} ;;\nesac"),
    ("for", lambda s: f"for i in 1; do {s}; done"),
    ("and", lambda s: f"true && {s}"),
    ("pipe", lambda s: f"{s} | cat"),
    ("comment", lambda s: f"# ${{p}} ' \"\n{s} # ${{p}} '"),
]


@st.composite
def shell_programs(draw: st.DrawFn) -> tuple[str, str, Expect]:
    statement = draw(
        st.one_of(
            _words_with_ticks.map(_printf),
            _words.map(_assigned),
            _words.map(_array),
            _words.map(_exported),
            _words.map(_printf_v),
            _words.map(_local),
            st.lists(st.sampled_from(["${p}", "text ", " ' ", ' " ', "\t"]), min_size=1, max_size=4)
            .filter(lambda parts: "${p}" in parts)
            .map(_heredoc),
            st.sampled_from(_BASE_WORDS).map(_here_string),
        )
    )
    # A here-document's delimiter must end its line: only wrappers that add nothing after it.
    compounds = _COMPOUNDS
    if statement[0] == "heredoc":
        compounds = [c for c in _COMPOUNDS if c[0] in ("plain", "if", "function", "and")]
    wrap_name, wrap = draw(st.sampled_from(compounds))
    return (f"{wrap_name}/{statement[0]}", wrap(statement[1]), statement[2])


def run_bash(code: str, env: dict[str, str], files: dict[str, str], cwd: Path) -> bytes:
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(cwd), **env}
    for name, content in files.items():
        path = cwd / f"{name}.value"
        path.write_bytes(as_bytes(content))
        env[name] = str(path)
    script = cwd / "node.sh"
    script.write_bytes(as_bytes(code))
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", str(script)],
        env=env,
        cwd=cwd,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, (code, result.stderr.decode(errors="replace"))
    return result.stdout


@fuzz_settings(ci_examples=400)
@given(program=shell_programs(), raw=hostile_values(nul=False, surrogates=True))
def test_shell_fuzz(
    tmp_path_factory: pytest.TempPathFactory, program: tuple[str, str, Expect], raw: str
) -> None:
    context, code, expect = program
    work = tmp_path_factory.mktemp("shell")
    canary = work / "pwned"
    value = concrete(raw, canary)
    event(f"shell context: {context.split('/')[0]} / {context.split('/')[1].split('(')[0]}")
    binding = bind_shell(code, resolution(value))
    out = run_bash(binding.code, binding.env, binding.files, work)
    assert out == expect(as_bytes(value)), (code, binding.code)
    assert not canary.exists(), binding.code


# -- python ----------------------------------------------------------------------------------------

_TEXT_PREFIXES = ["", "r", "u", "R", "U", "f", "F", "rf", "fr", "Rf", "fR", "RF"]
_BYTES_PREFIXES = ["b", "B", "rb", "br", "Rb", "bR", "RB"]
_QUOTES = ["'", '"', "'''", '"""']


@st.composite
def python_literal(draw: st.DrawFn, *, is_bytes: bool) -> tuple[str, str, Callable[[str], str]]:
    """A literal holding `${p}` between plain text; the expected value as a function of v."""
    prefix = draw(st.sampled_from(_BYTES_PREFIXES if is_bytes else _TEXT_PREFIXES))
    quote = draw(st.sampled_from(_QUOTES))
    before = draw(st.sampled_from(["", "a ", "x-", "\\t" if "r" not in prefix.lower() else "t"]))
    after = draw(st.sampled_from(["", " z", "."]))
    field = "f" in prefix.lower() and draw(st.booleans())
    empty = '{""}' if quote[0] == "'" else "{''}"
    body = before + (empty + "{{" if field else "") + "${p}" + ("}}" if field else "") + after
    if quote in ("'''", '"""') and draw(st.booleans()):
        body = "\n" + body + "\n"
    expected_before = before.replace("\\t", "\t") + ("{" if field else "")
    expected_after = ("}" if field else "") + after
    if body.startswith("\n"):
        expected_before, expected_after = "\n" + expected_before, expected_after + "\n"
    name = f"{prefix or 'plain'}{quote[0] * len(quote)}{'+field' if field else ''}"
    return (
        name,
        f"{prefix}{quote}{body}{quote}",
        lambda v: expected_before + v + expected_after,
    )


_EXPRESSIONS: list[tuple[str, Callable[[str], str]]] = [
    ("as-is", lambda e: e),
    ("parens", lambda e: f"({e})"),
    ("list", lambda e: f"[{e}][0]"),
    ("dict", lambda e: f"{{'k': {e}}}['k']"),
    ("call", lambda e: f"(lambda s: s)({e})"),
    (
        "implicit-concat",
        lambda e: f"({e} '')" if not e.startswith(("b", "B", "r", "R", "$")) else e,
    ),
]

_STATEMENTS: list[tuple[str, Callable[[str], str]]] = [
    ("module", lambda e: f"v = {e}"),
    ("function", lambda e: f"def f():\n    return {e}\nv = f()"),
    ("class", lambda e: f"class C:\n    v = {e}\nv = C.v"),
    ("if", lambda e: f"if True:\n    v = {e}  # ${{p}} '\nelse:\n    v = None"),
    ("multiline", lambda e: f"v = (\n    {e}\n)"),
]


@st.composite
def python_programs(draw: st.DrawFn) -> tuple[str, str, bool, Callable[[str], str]]:
    kind = draw(st.sampled_from(["text-literal", "bytes-literal", "bare"]))
    if kind == "bare":
        name, expr, expect = "bare", "${p}", (lambda v: v)
    else:
        name, expr, expect = draw(python_literal(is_bytes=kind == "bytes-literal"))
    wrap_name, wrap = draw(st.sampled_from(_EXPRESSIONS))
    statement_name, statement = draw(st.sampled_from(_STATEMENTS))
    if kind == "bytes-literal":
        out = "sys.stdout.buffer.write(v)"
    else:
        out = "sys.stdout.buffer.write(v.encode('utf-8', 'surrogateescape'))"
    code = f"import sys\n{statement(wrap(expr))}\n{out}\n"
    return (f"{statement_name}/{wrap_name}/{name}", code, kind == "bytes-literal", expect)


@fuzz_settings(ci_examples=200)
@given(program=python_programs(), raw=hostile_values(nul=True, surrogates=True))
def test_python_fuzz(
    tmp_path_factory: pytest.TempPathFactory,
    program: tuple[str, str, bool, Callable[[str], str]],
    raw: str,
) -> None:
    context, code, _, expect = program
    work = tmp_path_factory.mktemp("python")
    canary = work / "pwned"
    value = concrete(raw, canary)
    event(
        f"python context: {context.split('/')[0]} / {context.split('/')[2].replace('+field', '')}"
    )
    bound = bind_python(code, resolution(value))
    script = work / "node.py"
    script.write_bytes(as_bytes(bound))
    result = subprocess.run(
        [sys.executable, "-I", "-u", str(script)],
        cwd=work,
        capture_output=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
    )
    assert result.returncode == 0, (code, bound, result.stderr.decode(errors="replace"))
    assert result.stdout == as_bytes(expect(value)), (code, bound)
    assert not canary.exists(), bound


# -- PostgreSQL ------------------------------------------------------------------------------------

SqlExpr = tuple[str, str, Callable[[str], str]]

_SQL_EXPRESSIONS: list[SqlExpr] = [
    ("standard", "'a${p}b'", lambda v: f"a{v}b"),
    # N'' is character(n): trailing spaces are not significant to PostgreSQL.
    ("national", "N'${p}'", lambda v: v.rstrip(" ")),
    ("escape", "E'\\t${p}\\\\'", lambda v: f"\t{v}\\"),
    ("escape-continued", "E'a\\''\n'${p}'", lambda v: f"a'{v}"),
    ("escape-continued-comment", "E'a' -- it's\n  \n'${p}' \n'z'", lambda v: f"a{v}z"),
    ("standard-continued", "'a'\n'${p}'", lambda v: f"a{v}"),
    ("unicode", "U&'\\0041${p}'", lambda v: f"A{v}"),
    ("unicode-uescape", "U&'!0041${p}' UESCAPE '!'", lambda v: f"A{v}"),
    ("unicode-continued-uescape", "U&'${p}'\n'#0042' /* c */ UESCAPE '#'", lambda v: f"{v}B"),
    ("bind", "${p}::text", lambda v: v),
    ("bind-concat", "'a'::text || ${p} || 'b'", lambda v: f"a{v}b"),
    ("bind-cast", "CAST(${p} AS text)", lambda v: v),
    ("bind-function", "concat(${p}::text, E'\\'')", lambda v: f"{v}'"),
]

_SQL_NOISE = [
    ("none", ""),
    ("block-comment", "/* ' $$ /* nested \" */ ${p} */ "),
    ("line-comment", "-- ' ${p} $$\n"),
    ("dollar-quote", "$t$ ' ${HOME} $t$ IS NOT NULL AND "),
    ("dollar-empty", "$$'$$ IS NOT NULL AND "),
    ("identifier", '"it\'s" IS NULL OR '),
]


@st.composite
def sql_programs(draw: st.DrawFn) -> tuple[str, str, Callable[[str], str]]:
    name, expr, expect = draw(st.sampled_from(_SQL_EXPRESSIONS))
    noise_name, noise = draw(st.sampled_from(_SQL_NOISE))
    where = f"WHERE {noise}true" if noise and noise_name != "line-comment" else ""
    lead = noise if noise_name == "line-comment" else ""
    if noise_name == "identifier":
        code = f'{lead}INSERT INTO fuzz_out (v) SELECT {expr} FROM (SELECT 1 AS "it\'s") s'
    else:
        code = f"{lead}INSERT INTO fuzz_out (v) SELECT {expr} {where}"
    return (f"{name}/{noise_name}", code, expect)


@pytest.fixture
def node_connection(db_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Any]]:
    """A node connection (as the executor opens it) on its own loop, for a synchronous test."""
    loop = asyncio.new_event_loop()
    resolved = ResolvedConnection(kind="postgres", config={"dsn": db_url}, secrets={})

    async def open_() -> asyncpg.Connection[Any]:
        conn: asyncpg.Connection[Any] = await asyncpg.connect(**postgres_params(resolved, 30))
        await conn.execute("CREATE TABLE x (id int); CREATE TABLE fuzz_out (v text)")
        return conn

    conn = loop.run_until_complete(open_())
    try:
        yield loop, conn
    finally:
        loop.run_until_complete(conn.close())
        loop.close()


@fuzz_settings(ci_examples=400)
@given(
    program=sql_programs(),
    value=hostile_values(nul=False, surrogates=False),
    source=st.sampled_from(["trigger message", "node outputs"]),
)
def test_sql_fuzz(
    node_connection: tuple[asyncio.AbstractEventLoop, Any],
    program: tuple[str, str, Callable[[str], str]],
    value: str,
    source: str,
) -> None:
    """A value from an event or from an upstream node's outputs, in every SQL context."""
    loop, conn = node_connection
    context, code, expect = program
    event(f"sql context: {context}")
    event(f"value from: {source}")
    try:
        if source == "trigger message":
            binding = bind_sql(code, resolution(value))
        else:
            binding = bind_sql(code.replace("${p}", PLACEHOLDER), from_outputs(value))
    except BindingError as exc:
        pytest.fail(f"{code!r} with {value!r} was refused: {exc}")

    async def run() -> list[str]:
        await conn.execute("TRUNCATE fuzz_out")
        if binding.args:
            await conn.execute(binding.query, *binding.args)
        else:
            # The simple protocol runs every statement in the string, as a script node does.
            await conn.execute(binding.query)
        assert await conn.fetchval("SELECT to_regclass('x') IS NOT NULL"), binding.query
        return [r["v"] for r in await conn.fetch("SELECT v FROM fuzz_out")]

    assert loop.run_until_complete(run()) == [expect(value)], binding.query


@fuzz_settings(ci_examples=100)
@given(value=hostile_values(nul=False, surrogates=False))
def test_sql_identifier_fuzz(
    node_connection: tuple[asyncio.AbstractEventLoop, Any], value: str
) -> None:
    """A value in a quoted identifier (or `:ident`) names exactly that column, cut at 63 bytes."""
    loop, conn = node_connection
    encoded = value.encode()
    cut = encoded[:63].decode(errors="ignore")
    for code in ('SELECT 1 AS "${p}"', "SELECT 1 AS ${p:ident}"):
        binding = bind_sql(code, resolution(value))

        async def run(query: str = binding.query) -> str:
            statement = await conn.prepare(query)
            return str(statement.get_attributes()[0].name)

        if not value:
            with pytest.raises(asyncpg.PostgresSyntaxError, match="zero-length"):
                loop.run_until_complete(run())
            continue
        assert loop.run_until_complete(run()) == cut, binding.query
    assert loop.run_until_complete(conn.fetchval("SELECT to_regclass('x') IS NOT NULL"))
