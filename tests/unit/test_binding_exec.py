"""Bound node code run for real: values arrive byte for byte and never run.

Each case binds the injection corpus into shell or Python code, runs it in a `bash` or
`python3 -I` subprocess (with the environment and value files the binding asks for), and checks
that the process printed exactly the value and that the canary file no payload may create is
absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.params.binding.python import bind_python
from shared.params.binding.shell import ShellBinding, bind_shell
from shared.params.resolution import Resolution, ResolutionInput, resolve_parameters

CANARY = "/tmp/pwned"


def injection_corpus(canary: str = CANARY) -> dict[str, str]:
    """Hostile values; every one that could run a command would create `canary`."""
    touch = f"touch {canary}"
    return {
        "close-single-quote": f"'; {touch} #",
        "command-substitution": f"$({touch})",
        "backticks": f"`{touch}`",
        "double-quote": '"',
        "close-double-quote": f'"; {touch}; echo "',
        "triple-quotes": "'''",
        "triple-quote-escape": f"'''; __import__('os').system('{touch}'); '''",
        "triple-double-escape": f'"""+__import__("os").system("{touch}")+"""',
        "backslashes": "\\\\",
        "backslash-quote": f"\\'; {touch} #",
        "trailing-backslash": "C:\\data\\",
        "newline": f"line1\n{touch}\nline3",
        "heredoc-delimiter": f"x\nEOF\n{touch}",
        "python-call": f"__import__('os').system('{touch}')",
        "f-string-field": f"{{__import__('os').system('{touch}')}}",
        "sql-drop": "'); DROP TABLE x; --",
        "arithmetic": f"a[$({touch})]",
        "dollar-brace": "${HOME} $HOME ${SLUICE_P_1} $[yyyymmdd] ${bizdate}",
        "glob": "* ?",
        "spaces": "  two  spaces  ",
        "empty": "",
        "unicode": "héllo 世界 \u2028 \U0001f600",
        "control": "\x01\x1b[31m\x7f\t\r",
        "invalid-utf8": b"\xff\xfe\xc3(".decode("utf-8", "surrogateescape"),
        "one-megabyte": ("'\"\\$(x)`\n" * (2**20 // 10 + 1))[: 2**20],
    }


CORPUS_NAMES = sorted(injection_corpus())
CYCTIME = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)


def resolution(value: str | None = None, trigger_message: object = None) -> Resolution:
    """`${p}` is `value`, taken from the event as event data is (never expanded again)."""
    if value is not None:
        trigger_message = {"v": value}
    return resolve_parameters(
        ResolutionInput(
            workflow_type="triggered",
            cyctime=CYCTIME,
            workflow_name="wf",
            instance_id=1,
            version=1,
            node_name="node",
            runtime_params={"p": "${workflow.triggerMessage.v:-}"},
            trigger_message=trigger_message,
        )
    )


def as_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def run(argv: list[str], script: Path, env: dict[str, str], cwd: Path) -> bytes:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
    result = subprocess.run(
        [*argv, str(script)],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def run_bash(binding: ShellBinding, tmp_path: Path) -> bytes:
    env = dict(binding.env)
    for name, content in binding.files.items():
        path = tmp_path / f"{name}.value"
        path.write_bytes(as_bytes(content))
        env[name] = str(path)
    script = tmp_path / "node.sh"
    script.write_bytes(as_bytes(binding.code))
    return run(["bash"], script, env, tmp_path)


def run_python(code: str, tmp_path: Path) -> bytes:
    script = tmp_path / "node.py"
    script.write_bytes(as_bytes(code))
    return run([sys.executable, "-I"], script, {}, tmp_path)


def same(value: str) -> bytes:
    return as_bytes(value)


def with_newline(value: str) -> bytes:
    return as_bytes(value + "\n")


def substituted(value: str) -> bytes:
    # Command substitution drops trailing newlines, as it does for any output.
    return as_bytes(value).rstrip(b"\n")


SHELL_FORMS: list[tuple[str, str, Callable[[str], bytes]]] = [
    ("unquoted", "printf '%s' ${p}", same),
    ("double-quoted", "printf '%s' \"${p}\"", same),
    ("single-quoted", "printf '%s' '${p}'", same),
    ("ansi-c", "printf '%s' $'${p}'", same),
    ("concatenated", "printf '%s' \"\"${p}''", same),
    ("assignment", "x=${p}; printf '%s' \"$x\"", same),
    ("command-substitution", "printf '%s' \"$(printf '%s' '${p}')\"", substituted),
    ("backticks", "printf '%s' \"`printf '%s' ${p}`\"", substituted),
    ("param-default", "printf '%s' ${SLUICE_UNSET:-${p}}", same),
    ("quoted-param-default", "printf '%s' \"${SLUICE_UNSET:-${p}}\"", same),
    ("heredoc", "cat <<EOF\n${p}\nEOF", with_newline),
    ("here-string", "cat <<<${p}", with_newline),
    ("shebang", "#!/bin/bash\nset -eu\nprintf '%s' \"${p}\"", same),
]


@pytest.mark.parametrize("name", CORPUS_NAMES)
@pytest.mark.parametrize(
    ("form", "code", "expected"), SHELL_FORMS, ids=[form[0] for form in SHELL_FORMS]
)
def test_shell_prints_the_value_literally(
    tmp_path: Path, name: str, form: str, code: str, expected: Callable[[str], bytes]
) -> None:
    canary = tmp_path / "pwned"
    value = injection_corpus(str(canary))[name]
    binding = bind_shell(code, resolution(value))
    assert run_bash(binding, tmp_path) == expected(value)
    assert not canary.exists()


def print_text(assignment: str) -> str:
    return (
        f"{assignment}\nimport sys\nsys.stdout.buffer.write(v.encode('utf-8', 'surrogateescape'))\n"
    )


def print_bytes(assignment: str) -> str:
    return f"{assignment}\nimport sys\nsys.stdout.buffer.write(v)\n"


PYTHON_FORMS: list[tuple[str, str]] = [
    ("bare", print_text("v = ${p}")),
    ("single", print_text("v = '${p}'")),
    ("double", print_text('v = "${p}"')),
    ("triple-single", print_text("v = '''${p}'''")),
    ("triple-double", print_text('v = """${p}"""')),
    ("raw", print_text("v = r'${p}'")),
    ("raw-triple", print_text('v = R"""${p}"""')),
    ("unicode-prefix", print_text("v = u'${p}'")),
    ("f-string", print_text("v = f'${p}'")),
    ("f-string-fields", print_text('v = f\'{""}${p}{""!s:}\'')),
    ("raw-f-string", print_text('v = rf"${p}"')),
    ("f-triple", print_text("v = f'''${p}'''")),
    ("concatenated", print_text("v = '${p}' + ${p}[:0]")),
    ("bytes", print_bytes("v = b'${p}'")),
    ("raw-bytes", print_bytes("v = rb'${p}'")),
    ("bytes-triple", print_bytes('v = b"""${p}"""')),
    ("commented", print_text("v = ${p}  # ${p} '")),
]


@pytest.mark.parametrize("name", CORPUS_NAMES)
@pytest.mark.parametrize(("form", "code"), PYTHON_FORMS, ids=[form[0] for form in PYTHON_FORMS])
def test_python_prints_the_value_literally(tmp_path: Path, name: str, form: str, code: str) -> None:
    canary = tmp_path / "pwned"
    value = injection_corpus(str(canary))[name]
    bound = bind_python(code, resolution(value))
    assert run_python(bound, tmp_path) == as_bytes(value)
    assert not canary.exists()


KAFKA_VALUE = '{"user_id": "1001", "action_type": "login", "timestamp": 1688888888}'

# The node code of DataWorks' Kafka example, as a user would paste it.
DATAWORKS_PYTHON = """import json

# 1. Get the 'value' field from the Kafka message, which is a JSON-encoded string.
message_value_str = '${workflow.triggerMessage.value}'

print(f'Received raw message value string: {message_value_str}')

try:
    # 2. Parse the string into a Python dictionary.
    message_data = json.loads(message_value_str)

    user_id = message_data.get("user_id")
    action_type = message_data.get("action_type")
    print(f"Successfully parsed message. User ID: {user_id}, Action: {action_type}")

    if action_type == 'login':
        # o.run_sql(f"INSERT OVERWRITE TABLE t PARTITION(ds='{bizdate}') VALUES ('{user_id}');")
        print("Processing login action...")
    else:
        print("Unknown action type.")
except json.JSONDecodeError as e:
    print(f"Error decoding JSON: {e}")
    raise e
"""


@pytest.mark.parametrize(
    ("value", "user_id"),
    [
        (KAFKA_VALUE, "1001"),
        ('{"user_id": "O\'Brien", "action_type": "login", "timestamp": 1688888888}', "O'Brien"),
        ('{"user_id": "a\\\\b\\"c\\n", "action_type": "login"}', 'a\\b"c\n'),
    ],
)
def test_dataworks_python_example(tmp_path: Path, value: str, user_id: str) -> None:
    message: dict[str, Any] = {"topic": "user-behavior-topic", "value": value, "headers": {}}
    bound = bind_python(DATAWORKS_PYTHON, resolution(trigger_message=message))
    output = run_python(bound, tmp_path).decode()
    assert output == (
        f"Received raw message value string: {value}\n"
        f"Successfully parsed message. User ID: {user_id}, Action: login\n"
        "Processing login action...\n"
    )


def test_dataworks_shell_example(tmp_path: Path) -> None:
    code = 'echo "Hello, Trigger Workflow! Current time is ${bizdate}"'
    output = run_bash(bind_shell(code, resolution()), tmp_path)
    assert output == b"Hello, Trigger Workflow! Current time is 20260309\n"


def test_dataworks_oss_shell_example(tmp_path: Path) -> None:
    code = (
        "# You can use ${workflow.triggerMessage.data.oss.object.key} to get the path.\n"
        'message="${workflow.triggerMessage}"\n'
        'echo "Raw Value: ${message}"\n'
        'FILE_PATH="${workflow.triggerMessage.data.oss.object.key}"\n'
        'echo "A new file has arrived: ${FILE_PATH}"\n'
    )
    message = {"data": {"oss": {"object": {"key": "input/test_$(id)_'20260310'.csv"}}}}
    output = run_bash(bind_shell(code, resolution(trigger_message=message)), tmp_path)
    assert output.decode() == (
        'Raw Value: {"data":{"oss":{"object":{"key":"input/test_$(id)_\'20260310\'.csv"}}}}\n'
        "A new file has arrived: input/test_$(id)_'20260310'.csv\n"
    )
