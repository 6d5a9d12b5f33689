"""Placeholders that a second interpreter parses again are found, with the line and safe form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.models.workflows import WorkflowSpec
from shared.params.binding import BindingError
from shared.params.binding.python import bind_python
from shared.params.binding.reparsed import find_reparsed
from shared.params.binding.shell import bind_shell
from tests.unit.test_binding_sql import resolution


def known(path: str) -> bool:
    return path.split(".")[0] in ("p", "workflow")


SHELL_REJECTED = [
    "bash -c 'echo ${p}'",
    'bash -c "echo ${p}"',
    "bash -c ${p}",
    "sh -ec 'ls ${p}'",
    "/bin/bash -lc 'echo ${p}' name",
    "dash -c -- 'echo ${p}'",
    "trap 'echo ${p}' EXIT",
    'trap -- "rm ${p}" EXIT INT',
    "eval echo ${p}",
    'eval "x=${p}"',
    "su - app -c 'echo ${p}'",
    "su app --command='echo ${p}'",
    "ssh -p 22 host 'echo ${p}'",
    "ssh host ls ${p}",
    "ls | xargs sh -c 'echo ${p} $0'",
    "xargs -I{} -n 1 bash -c 'cp {} ${p}'",
    "sudo -u app bash -c 'echo ${p}'",
    "env -i A=1 bash -c 'echo ${p}'",
    "timeout 10 sh -c 'echo ${p}'",
    "nohup nice -n 5 sh -c 'echo ${p}' &",
    "find . -name x -exec sh -c 'echo ${p}' \\;",
    "python3 -c 'print(${p})'",
    "python -c \"import os; print('${p}')\"",
    "perl -e 'print \"${p}\"'",
    "node -e 'console.log(\"${p}\")'",
    "psql -c \"select '${p}'\"",
    "awk '{ print \"${p}\" }' file",
    "watch -n 1 echo ${p}",
    "echo \"$(bash -c 'echo ${p}')\"",
    "x=`sh -c 'echo ${p}'`",
    "if true; then bash -c 'echo ${p}'; fi",
    "echo ${p} | sh",
    "printf '%s' \"${p}\" | python3",
    "bash <<EOF\necho ${p}\nEOF",
    "python3 - <<<'print(\"${p}\")'",
    "flock /tmp/l -c 'echo ${p}'",
    "echo ok; bash -c 'echo ${workflow.triggerMessage.key}'",
    "echo ${UNSET:-$(bash -c 'echo ${p}')}",
    "echo \"${UNSET:-`sh -c 'echo ${p}'`}\"",
    "cat <<EOF\nit's $(bash -c 'echo ${p}')\nEOF",
    "cat <<-EOF | cat\n\tx\n\tEOF\neval ${p}",
]

SHELL_ACCEPTED = [
    "echo ${p}",
    "printf '%s' '${p}'",
    "bash -c 'echo \"$1\"' _ ${p}",
    "bash -c 'echo \"$SLUICE_PARAM_P\"'",
    "bash script.sh ${p}",
    "sh -c 'echo ${HOME}'",
    "trap 'echo done' EXIT; echo ${p}",
    "ssh host 'ls'; echo ${p}",
    "cat <<EOF\n${p}\nEOF",
    "echo ${p} | cat",
    "grep -e ${p} file",
    "python3 script.py ${p}",
    "# bash -c '${p}'\necho ok",
    "awk -v v=${p} '{ print v }' file",
    "xargs -n 1 echo ${p}",
    "echo ${p} > out.txt",
    "find . -name ${p} -print",
]


@pytest.mark.parametrize("code", SHELL_REJECTED)
def test_shell_reparsed_contexts_are_found(code: str) -> None:
    found = find_reparsed(code, "shell", known)
    assert found, code
    text = found[0].message(code)
    assert text.startswith(f"line {code[: code.index('${')].count(chr(10)) + 1}: ${{")
    assert "parses it again as code" in text
    assert '"$SLUICE_PARAM_' in text


@pytest.mark.parametrize("code", SHELL_ACCEPTED)
def test_shell_data_contexts_are_accepted(code: str) -> None:
    assert find_reparsed(code, "shell", known) == []


def test_the_safe_form_names_the_parameter_variable() -> None:
    [found] = find_reparsed("x=1\nbash -c 'echo ${p}'", "shell", known)
    assert found.line == 2
    assert found.safe == '"$SLUICE_PARAM_P"'
    [nested] = find_reparsed("eval ${workflow.triggerMessage.a}", "shell", known)
    assert "parameter X defined as ${workflow.triggerMessage.a}" in nested.safe


PYTHON_REJECTED = [
    "import os\nos.system(f'echo ${p}')",
    "import os\nos.system('echo ${p}')",
    "import os\nos.popen('cat ${p}').read()",
    "import subprocess\nsubprocess.run('echo ${p}', shell=True)",
    'import subprocess\nsubprocess.check_output(f"ls {x} ${p}", shell=True, text=True)',
    "import subprocess\nsubprocess.run(['bash', '-c', 'echo ${p}'])",
    "import subprocess\nsubprocess.run(('/usr/bin/python3', '-c', 'print(${p})'))",
    "import subprocess\nsubprocess.getoutput('echo ${p}')",
    "exec('x = ${p}')",
    'eval("${p}")',
    "compile('${p}', 'f', 'exec')",
    "import asyncio\nasyncio.create_subprocess_shell('echo ${p}')",
]

PYTHON_ACCEPTED = [
    "print('${p}')",
    "import subprocess\nsubprocess.run(['echo', '${p}'])",
    "import subprocess\nsubprocess.run(['echo', '${p}'], shell=False)",
    "import subprocess\nsubprocess.run(['grep', '-e', '${p}', 'file'])",
    "import os\nos.system('echo \"$SLUICE_PARAM_P\"')",
    "x = '${p}'  # os.system('${p}')",
    "eval('1 + 1')\ny = ${p}",
]


@pytest.mark.parametrize("code", PYTHON_REJECTED)
def test_python_reparsed_contexts_are_found(code: str) -> None:
    found = find_reparsed(code, "python", known)
    assert found, code
    assert 'os.environ["SLUICE_PARAM_P"]' in found[0].message(code)


@pytest.mark.parametrize("code", PYTHON_ACCEPTED)
def test_python_data_contexts_are_accepted(code: str) -> None:
    assert find_reparsed(code, "python", known) == []


SQL_REJECTED = [
    "DO $$ BEGIN EXECUTE 'DELETE FROM t WHERE id = ''${p}'''; END $$",
    "DO $body$ BEGIN EXECUTE format('SELECT %s', '${p}'); END $body$",
    "CREATE FUNCTION f() RETURNS int AS $$ SELECT ${p} $$ LANGUAGE sql",
    "COPY t TO PROGRAM 'gzip > /tmp/${p}.gz'",
    "SELECT * FROM dblink('db', 'SELECT ''${p}''') AS t(x text)",
    "SELECT query_to_xml('select ${p}', true, false, '')",
    "DO 'BEGIN EXECUTE ''DELETE FROM t WHERE x = ${p}''; END'",
    "select 1;\nCREATE OR REPLACE FUNCTION f() RETURNS int AS 'SELECT ${p}' LANGUAGE sql",
]

SQL_ACCEPTED = [
    "SELECT '${p}'",
    "SELECT ${p}",
    "SELECT format('%s', '${p}')",
    "COPY t TO '/tmp/${p}.csv'",
    "SELECT $$ x $$, '${p}'",
    "SELECT dblink_connect('db'); SELECT '${p}'",
    "SELECT x AS '${p}'",
    "CREATE TABLE t AS SELECT '${p}' AS v",
]


@pytest.mark.parametrize("code", SQL_REJECTED)
def test_sql_reparsed_contexts_are_found(code: str) -> None:
    found = find_reparsed(code, "sql", known)
    assert found, code
    assert "bind parameter" in found[0].message(code)


@pytest.mark.parametrize("code", SQL_ACCEPTED)
def test_sql_data_contexts_are_accepted(code: str) -> None:
    assert find_reparsed(code, "sql", known) == []


def test_workflow_specs_refuse_reparsed_placeholders_naming_the_node() -> None:
    spec = {
        "name": "wf",
        "type": "manual",
        "parameters": {"p": "x"},
        "nodes": [
            {"name": "ok", "type": "shell", "code": "echo ${p}"},
            {"name": "load", "type": "shell", "code": "set -e\nbash -c 'echo ${p}'"},
        ],
    }
    with pytest.raises(ValidationError) as caught:
        WorkflowSpec.model_validate(spec)
    message = str(caught.value)
    assert "nodes.load.code: line 2: ${p} is inside the code argument of `bash -c`" in message
    assert '"$SLUICE_PARAM_P"' in message
    # A name the spec does not define is shell syntax here, not a placeholder.
    spec["nodes"] = [{"name": "ok", "type": "shell", "code": "bash -c 'echo ${HOME}'"}]
    WorkflowSpec.model_validate(spec)


def test_each_nesting_level_is_analysed_once() -> None:
    # Re-analysing nested substitutions at every level would take 2**40 steps here.
    code = "echo " + '"$(echo ' * 40 + "\"$(bash -c '${p}')\"" + ')"' * 40
    assert len(find_reparsed(code, "shell", known)) == 1


_WRAPPERS = ["", "sudo -u app ", "env A=1 ", "timeout 5 ", "nohup ", "nice -n 5 ", "xargs -n1 "]
_SECOND = [
    "bash -c {w}",
    "sh -ec {w} name",
    "eval {w}",
    "trap {w} EXIT",
    "su app -c {w}",
    "ssh -p 22 host {w}",
    "python3 -c {w}",
    "perl -e {w}",
    "psql -d db -c {w}",
    "awk {w} file",
]
_WORDS = ["'x ${p} y'", '"x ${p}"', "${p}", "\"$(printf %s '${p}')\"", "$'${p}'"]
_AROUND = [
    "{s}",
    "( {s} )",
    "if true; then\n  {s}\nfi",
    "f() {{ {s}; }}; f",
    'echo "$({s})"',
    "true && {s} | cat",
    "# {s}\n{s}",
]


@settings(max_examples=300, derandomize=True, database=None)
@given(
    wrapper=st.sampled_from(_WRAPPERS),
    second=st.sampled_from(_SECOND),
    word=st.sampled_from(_WORDS),
    around=st.sampled_from(_AROUND),
)
def test_generated_second_interpreters_are_refused(
    wrapper: str, second: str, word: str, around: str
) -> None:
    code = around.format(s=wrapper + second.format(w=word))
    assert find_reparsed(code, "shell", known), code
    with pytest.raises(BindingError, match="which parses it again as code"):
        bind_shell(code, resolution({"p": "$(touch /tmp/pwned)"}))


_PY_CALLS = [
    "os.system({e})",
    "os.popen({e}).read()",
    "subprocess.run({e}, shell=True)",
    "subprocess.check_output({e}, shell=True, text=True)",
    "exec({e})",
    "eval({e})",
    "compile({e}, 'f', 'exec')",
    "subprocess.run(['bash', '-c', {e}])",
    "asyncio.create_subprocess_shell({e})",
]
_PY_EXPRS = ["'${p}'", "f'ls {{x}} ${p}'", '"""\n${p}\n"""', "'a ' + '${p}'", "r'${p}'"]
_PY_AROUND = ["{c}", "def f():\n    return {c}\n", "if True:\n    x = {c}\n", "y = [{c}]"]


@settings(max_examples=200, derandomize=True, database=None)
@given(
    call=st.sampled_from(_PY_CALLS),
    expr=st.sampled_from(_PY_EXPRS),
    around=st.sampled_from(_PY_AROUND),
)
def test_generated_python_reparsing_calls_are_refused(call: str, expr: str, around: str) -> None:
    code = "import os, subprocess, asyncio\nx = 1\n" + around.format(c=call.format(e=expr))
    assert find_reparsed(code, "python", known), code
    with pytest.raises(BindingError, match="which parses it again as code"):
        bind_python(code, resolution({"p": "__import__('os').system('id')"}))
