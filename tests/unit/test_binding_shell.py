"""Shell binding: placeholders become quoted environment-variable references."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.params.binding import BindingError
from shared.params.binding.shell import MAX_ENV_VALUE, bind_shell
from shared.params.paths import MissingPath
from shared.params.resolution import Resolution, ResolutionInput, resolve_parameters
from tests.unit.test_binding_exec import CORPUS_NAMES, injection_corpus

P1 = '"${SLUICE_P_1}"'


def resolution(values: dict[str, str] | None = None, trigger_message: object = None) -> Resolution:
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
            trigger_message=trigger_message if trigger_message is not None else values,
        )
    )


@pytest.mark.parametrize(
    ("code", "bound"),
    [
        ("echo ${p}", f"echo {P1}"),
        ('echo "${p}"', 'echo "${SLUICE_P_1}"'),
        ('echo "a ${p} b"', 'echo "a ${SLUICE_P_1} b"'),
        ("echo '${p}'", f"echo ''{P1}''"),
        ("echo 'a ${p} b'", f"echo 'a '{P1}' b'"),
        ("echo $'${p}\\n'", f"echo $''{P1}$'\\n'"),
        ('echo $"${p}"', 'echo $"${SLUICE_P_1}"'),
        ("x=${p}", f"x={P1}"),
        ("arr=(${p} ${q})", f'arr=({P1} "${{SLUICE_P_2}}")'),
        ("cmd >${p}.log", f"cmd >{P1}.log"),
        ("echo ${p}${p} ${q}", f'echo {P1}{P1} "${{SLUICE_P_2}}"'),
        ("echo ${p:-x} ${p}", f'echo {P1} "${{SLUICE_P_2}}"'),
        # Command substitution starts a fresh quoting context.
        ("echo \"$(echo '${p}')\"", f"echo \"$(echo ''{P1}'')\""),
        ("echo $(echo ${p})", f"echo $(echo {P1})"),
        ("echo `echo ${p}`", f"echo `echo {P1}`"),
        ('echo "`echo ${p}`"', f'echo "`echo {P1}`"'),
        ('echo "$(echo "${p}")"', 'echo "$(echo "${SLUICE_P_1}")"'),
        # ${var:-word} keeps the quoting of its surroundings.
        ("echo ${HOME:-${p}}", f"echo ${{HOME:-{P1}}}"),
        ('echo "${HOME:-${p}}"', 'echo "${HOME:-${SLUICE_P_1}}"'),
        ("echo ${HOME#${p}}", f"echo ${{HOME#{P1}}}"),
        ("echo ${HOME:-'${p}'}", f"echo ${{HOME:-''{P1}''}}"),
        ("echo \"${HOME:-'${p}'}\"", "echo \"${HOME:-'${SLUICE_P_1}'}\""),
        # Escapes and comments: left alone, as the shell would.
        ("echo \\${p}", "echo \\${p}"),
        ('echo "\\${p}"', 'echo "\\${p}"'),
        ("echo '\\${p}'", f"echo '\\'{P1}''"),
        ("echo $${p}", "echo $${p}"),
        ("# ${p}", "# ${p}"),
        ("echo hi # ${p} '\necho ${p}", f"echo hi # ${{p}} '\necho {P1}"),
        ("echo a#${p}", f"echo a#{P1}"),
        ("echo ${#p} ${p}", f"echo ${{#p}} {P1}"),
        # Names that do not resolve are shell syntax.
        ("echo ${HOME} ${FILE_PATH} $p ${1} ${@}", "echo ${HOME} ${FILE_PATH} $p ${1} ${@}"),
        # Here-documents: unquoted bodies expand like double quotes, quotes there are literal.
        (
            "cat <<EOF\n${p} '${p}' \"${p}\"\nEOF\necho '${p}'",
            f"cat <<EOF\n${{SLUICE_P_1}} '${{SLUICE_P_1}}' \"${{SLUICE_P_1}}\"\nEOF\necho ''{P1}''",
        ),
        (
            "cat <<-END\n\t${p}\n\tEND\necho ${p}",
            f"cat <<-END\n\t${{SLUICE_P_1}}\n\tEND\necho {P1}",
        ),
        (
            "cat <<A <<B\n${p}\nA\n'${p}'\nB\necho ${p}",
            f"cat <<A <<B\n${{SLUICE_P_1}}\nA\n'${{SLUICE_P_1}}'\nB\necho {P1}",
        ),
        ("cat <<'EOF'\nit's\nEOF\necho ${p}", f"cat <<'EOF'\nit's\nEOF\necho {P1}"),
        ("cat <<<${p}", f"cat <<<{P1}"),
        ("echo $((1 << 2)) ${p}", f"echo $((1 << 2)) {P1}"),
        # `case` patterns inside $(...) do not close it.
        (
            "x=$(case a in a) echo ${p};; esac); echo '${p}'",
            f"x=$(case a in a) echo {P1};; esac); echo ''{P1}''",
        ),
        ("case ${p} in (${q}) :;; esac", f'case {P1} in ("${{SLUICE_P_2}}") :;; esac'),
        ("[[ ${p} == x ]] && echo ${q}", f'[[ {P1} == x ]] && echo "${{SLUICE_P_2}}"'),
    ],
)
def test_bound_code(code: str, bound: str) -> None:
    assert bind_shell(code, resolution()).code == bound


def test_same_reference_shares_a_variable() -> None:
    binding = bind_shell("echo ${p} '${p}' ${q} ${p:-d}", resolution())
    assert binding.code == (
        'echo "${SLUICE_P_1}" \'\'"${SLUICE_P_1}"\'\' "${SLUICE_P_2}" "${SLUICE_P_3}"'
    )
    assert binding.env == {"SLUICE_P_1": "value", "SLUICE_P_2": "other", "SLUICE_P_3": "value"}
    assert binding.files == {}


@pytest.mark.parametrize(
    "code",
    [
        "echo $(( ${p} + 1 ))",
        'echo $(( "${p}" + 1 ))',
        "(( ${p} > 1 ))",
        "for ((i = 0; i < ${p}; i++)); do :; done",
        "echo $[ ${p} + 1 ]",
        "echo ${arr[${p}]}",
        'echo "${arr[${p}]}"',
        "echo ${HOME:${p}}",
        "echo ${HOME:1:${p}}",
    ],
)
def test_arithmetic_contexts_are_rejected(code: str) -> None:
    with pytest.raises(BindingError, match=r"cannot bind \$\{p\} on line 1 of the shell code"):
        bind_shell(code, resolution())


def test_command_substitution_inside_arithmetic_is_a_command_context() -> None:
    assert bind_shell("echo $(( $(echo ${p}) ))", resolution()).code == (
        f"echo $(( $(echo {P1}) ))"
    )


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("cat <<'EOF'\n${p}\nEOF", "a quoted here-document does not expand variables"),
        ('cat <<"EOF"\n${p}\nEOF', "a quoted here-document does not expand variables"),
        ("cat <<\\EOF\n${p}\nEOF", "a quoted here-document does not expand variables"),
        ("echo ${p:ident}", "':ident' is only meaningful in SQL node code"),
    ],
)
def test_unbindable_placeholders(code: str, reason: str) -> None:
    with pytest.raises(BindingError) as caught:
        bind_shell(code, resolution())
    assert str(caught.value).endswith(reason)


def test_error_names_the_line() -> None:
    with pytest.raises(BindingError, match=r"cannot bind \$\{p\} on line 3 of the shell code"):
        bind_shell("echo ok\necho ${q}\necho $(( ${p} ))", resolution())


def test_nul_in_a_value_is_rejected() -> None:
    with pytest.raises(BindingError, match="NUL"):
        bind_shell("echo ${p}", resolution({"p": "a\x00b"}))


def test_missing_trigger_path_fails_naming_it() -> None:
    with pytest.raises(MissingPath) as caught:
        bind_shell('FILE_PATH="${workflow.triggerMessage.data.oss.object.key}"', resolution())
    assert caught.value.path == "workflow.triggerMessage.data.oss.object.key"
    assert "missing path 'workflow.triggerMessage.data.oss.object.key'" in str(caught.value)


def test_defaults_apply_to_missing_paths() -> None:
    binding = bind_shell("echo ${workflow.triggerMessage.nope:-none}", resolution())
    assert binding.env == {"SLUICE_P_1": "none"}


def test_code_without_placeholders_is_unchanged() -> None:
    code = "echo ${HOME} $(( 1 + 2 )) <<'EOF'\n${x}\nEOF\n"
    binding = bind_shell(code, resolution())
    assert (binding.code, binding.env, binding.files) == (code, {}, {})


CONTEXTS = "echo ${p} \"${p}\" '${p}' $'${p}' $(echo ${p}) \"${HOME:-${p}}\"\ncat <<E\n${p}\nE"


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_values_never_reach_the_code(name: str) -> None:
    value = injection_corpus()[name]
    reference = bind_shell(CONTEXTS, resolution({"p": "plain"}))
    binding = bind_shell(CONTEXTS, resolution({"p": value}))
    if len(value.encode("utf-8", "surrogateescape")) <= MAX_ENV_VALUE:
        assert binding.code == reference.code
        assert binding.env == {"SLUICE_P_1": value}
        assert binding.files == {}
    else:
        loader = "IFS= read -r -d '' SLUICE_P_1 < \"${SLUICE_P_1_FILE}\" || :; "
        assert binding.code == loader + reference.code
        assert binding.env == {}
        assert binding.files == {"SLUICE_P_1_FILE": value}


@pytest.mark.parametrize(
    ("code", "bound"),
    [
        ("echo ${p}", 'LOAD; echo "${SLUICE_P_1}"'),
        ("#!/bin/bash\necho ${p}\n", '#!/bin/bash\nLOAD; echo "${SLUICE_P_1}"\n'),
        ("#!/bin/sh", "#!/bin/sh"),
    ],
)
def test_large_values_are_loaded_from_files_on_the_first_line(code: str, bound: str) -> None:
    big = "x" * (MAX_ENV_VALUE + 1)
    binding = bind_shell(code, resolution({"p": big}))
    loader = "IFS= read -r -d '' SLUICE_P_1 < \"${SLUICE_P_1_FILE}\" || :;"
    if "${p}" in code:
        assert binding.code == bound.replace("LOAD;", loader)
        assert binding.files == {"SLUICE_P_1_FILE": big}
    else:
        assert binding.code == code


def test_many_medium_values_spill_to_files() -> None:
    values = {f"p{n}": str(n) * (MAX_ENV_VALUE // 2) for n in range(20)}
    code = " ".join(f"${{{name}}}" for name in values)
    binding = bind_shell(code, resolution(values))
    assert binding.env and binding.files
    assert sum(len(name) + len(value) + 2 for name, value in binding.env.items()) <= 256 * 1024
    assert {**binding.env, **{k.removesuffix("_FILE"): v for k, v in binding.files.items()}} == {
        f"SLUICE_P_{n + 1}": values[f"p{n}"] for n in range(20)
    }
