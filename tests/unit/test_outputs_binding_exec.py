"""Hostile node outputs bound into real bash and python, exactly as hostile trigger messages are.

The code forms and the injection corpus are those of test_binding_exec; only the placeholder
changes: `${nodes.up.outputs.v}` instead of a trigger-message path. Each bound program must
print the value byte for byte, and the canary file no payload may create must stay absent.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.params.binding.python import bind_python
from shared.params.binding.shell import bind_shell
from shared.params.outputs import parse_outputs
from shared.params.resolution import Resolution, ResolutionInput, resolve_parameters
from tests.unit.test_binding_exec import (
    CORPUS_NAMES,
    PYTHON_FORMS,
    SHELL_FORMS,
    as_bytes,
    injection_corpus,
    run_bash,
    run_python,
)

PLACEHOLDER = "${nodes.up.outputs.v}"


def from_outputs(value: str) -> Resolution:
    """`${nodes.up.outputs.v}` is `value`, as the outputs of an ancestor named `up`."""
    return resolve_parameters(
        ResolutionInput(
            workflow_type="triggered",
            cyctime=datetime(2026, 3, 10, 8, 0, tzinfo=UTC),
            workflow_name="wf",
            instance_id=1,
            version=1,
            node_name="down",
            node_outputs={"up": {"v": value}},
        )
    )


@pytest.mark.parametrize("name", CORPUS_NAMES)
@pytest.mark.parametrize(
    ("form", "code", "expected"), SHELL_FORMS, ids=[form[0] for form in SHELL_FORMS]
)
def test_shell_prints_the_output_literally(
    tmp_path: Path, name: str, form: str, code: str, expected: Callable[[str], bytes]
) -> None:
    canary = tmp_path / "pwned"
    value = injection_corpus(str(canary))[name]
    binding = bind_shell(code.replace("${p}", PLACEHOLDER), from_outputs(value))
    assert run_bash(binding, tmp_path) == expected(value)
    assert not canary.exists()


@pytest.mark.parametrize("name", CORPUS_NAMES)
@pytest.mark.parametrize(("form", "code"), PYTHON_FORMS, ids=[form[0] for form in PYTHON_FORMS])
def test_python_prints_the_output_literally(
    tmp_path: Path, name: str, form: str, code: str
) -> None:
    canary = tmp_path / "pwned"
    value = injection_corpus(str(canary))[name]
    bound = bind_python(code.replace("${p}", PLACEHOLDER), from_outputs(value))
    assert run_python(bound, tmp_path) == as_bytes(value)
    assert not canary.exists()


# Text a node can put in its output file: any character JSON and PostgreSQL's jsonb can carry
# (no U+0000, no lone surrogates), with shell, python and SQL metacharacters made likely.
_HOSTILE = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("'\"`$(){}[];|&<>\\#*?~!%\n\r\t ")),
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    ),
    max_size=80,
)


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    value=_HOSTILE,
    shell=st.sampled_from(SHELL_FORMS),
    python=st.sampled_from(PYTHON_FORMS),
)
def test_generated_outputs_arrive_literally(
    value: str,
    shell: tuple[str, str, Callable[[str], bytes]],
    python: tuple[str, str],
) -> None:
    """A generated value goes through an output file (as a node writes it) and is bound into a
    generated shell and python form; both print it exactly."""
    outputs = parse_outputs("up", json.dumps({"v": value}).encode())
    resolution = from_outputs(outputs["v"])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        canary = work / "pwned"
        _, shell_code, expected = shell
        binding = bind_shell(shell_code.replace("${p}", PLACEHOLDER), resolution)
        assert run_bash(binding, work) == expected(value)
        _, python_code = python
        bound = bind_python(python_code.replace("${p}", PLACEHOLDER), resolution)
        assert run_python(bound, work) == as_bytes(value)
        assert not canary.exists()
