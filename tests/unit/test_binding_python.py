"""Python binding: placeholders become escaped literal text or string literals.

These tests never run the bound code: they parse it and read the literals back from the syntax
tree, which also proves that no value turned into an expression or a statement.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime

import pytest

from shared.params.binding import BindingError
from shared.params.binding.python import bind_python
from shared.params.paths import MissingPath
from shared.params.resolution import Resolution, ResolutionInput, resolve_parameters
from tests.unit.test_binding_exec import CORPUS_NAMES, injection_corpus


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


def constant(node: ast.expr) -> object:
    """The value of a literal expression; fails on anything that would compute something."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts: list[str] = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                parts.append(str(part.value))
            else:
                # Only the test's own `{1}` fields are allowed; a value never becomes a field.
                assert isinstance(part, ast.FormattedValue)
                assert isinstance(part.value, ast.Constant) and part.format_spec is None
                parts.append(str(part.value.value))
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = constant(node.left), constant(node.right)
        assert isinstance(left, str) and isinstance(right, str)
        return left + right
    raise AssertionError(f"not a literal: {ast.dump(node)}")


def assigned(code: str) -> object:
    """The literal value of `v` in code made of exactly one `v = <literal>` statement."""
    tree = ast.parse(code)
    assert len(tree.body) == 1
    statement = tree.body[0]
    assert isinstance(statement, ast.Assign)
    return constant(statement.value)


def as_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


FORMS: list[tuple[str, str]] = [
    ("v = ${p}", "{v}"),
    ("v = '${p}'", "{v}"),
    ('v = "${p}"', "{v}"),
    ("v = '''${p}'''", "{v}"),
    ('v = """${p}"""', "{v}"),
    ("v = '''\n${p}\n'''", "\n{v}\n"),
    ("v = u'${p}'", "{v}"),
    ("v = r'${p}'", "{v}"),
    ('v = R"${p}"', "{v}"),
    ("v = r'''${p}'''", "{v}"),
    ('v = r"""${p}"""', "{v}"),
    ("v = f'${p}'", "{v}"),
    ('v = F"${p}"', "{v}"),
    ("v = f'''${p}'''", "{v}"),
    ("v = rf'${p}'", "{v}"),
    ('v = fR"""${p}"""', "{v}"),
    ("v = f'<{1}${p}{{}}${p}>'", "<1{v}{{}}{v}>"),
    ("v = rf'\\d{1}${p}\\\\'", "\\d1{v}\\\\"),
    ("v = 'a\\n${p}\\tb'", "a\n{v}\tb"),
    ("v = 'a\\\\${p}'", "a\\{v}"),
    ("v = '\\${p}'", "\\{v}"),
    ("v = r'\\${p}\\''", "\\{v}\\'"),
    ("v = r'\\\\${p}'", "\\\\{v}"),
    ("v = '${p}' + ${p}", "{v}{v}"),
    ("v = ('${p}'\n     '${p}')", "{v}{v}"),
    ("v = f'{1}' f'${p}'", "1{v}"),
]


@pytest.mark.parametrize("name", CORPUS_NAMES)
@pytest.mark.parametrize(("code", "template"), FORMS)
def test_text_literals_hold_the_value(name: str, code: str, template: str) -> None:
    value = injection_corpus()[name]
    bound = bind_python(code, resolution({"p": value}))
    assert assigned(bound) == template.replace("{{}}", "{}").replace("{v}", value)


BYTES_FORMS = ["v = b'${p}'", 'v = B"${p}"', "v = b'''${p}'''", "v = rb'${p}'", 'v = Br"""${p}"""']


@pytest.mark.parametrize("name", CORPUS_NAMES)
@pytest.mark.parametrize("code", BYTES_FORMS)
def test_bytes_literals_hold_the_utf8_bytes(name: str, code: str) -> None:
    value = injection_corpus()[name]
    assert assigned(bind_python(code, resolution({"p": value}))) == as_bytes(value)


@pytest.mark.parametrize(
    ("code", "value", "bound"),
    [
        ("v = ${p}", "it's", 'v = "it\'s"'),
        ("v = '${p}'", "it's", "v = 'it\\'s'"),
        ('v = "${p}"', "it's", 'v = "it\'s"'),
        ("v = '${p}'", "a\nb", "v = 'a\\nb'"),
        ("v = '''${p}'''", "a\nb'''", "v = '''a\\nb\\'\\'\\''''"),
        ("v = f'${p}'", "{x}", "v = f'{{x}}'"),
        ("v = f'{x}${p}'", "}", "v = f'{x}}}'"),
        # A raw literal keeps values it can spell and is rewritten for the others.
        ("v = r'\\d+${p}'", "C:\\data", "v = r'\\d+C:\\data'"),
        ("v = r'\\d+${p}'", "C:\\data\\", "v = '\\\\d+C:\\\\data\\\\'"),
        ("v = r'\\d+${p}'", "it's", "v = '\\\\d+it\\'s'"),
        ("v = rb'\\d${p}'", "é", "v = b'\\\\d\\xc3\\xa9'"),
        ("v = rf'{x}\\d{{${p}'", "\n", "v = f'{x}\\\\d{{\\n'"),
        ("v = b'${p}'", "é\udcff", "v = b'\\xc3\\xa9\\xff'"),
        ("v = '${p}'", "\udcff\x00", "v = '\\udcff\\x00'"),
        # Comments are left alone; only the code outside them is bound.
        ("v = ${p}  # ${p}", "x", "v = 'x'  # ${p}"),
        ("v = ${q}  # ${q:-d}", "x", "v = 'other'  # ${q:-d}"),
        ("v = '${HOME}${p}'", "x", "v = '${HOME}x'"),
    ],
)
def test_bound_code(code: str, value: str, bound: str) -> None:
    assert bind_python(code, resolution({"p": value, "q": "other"})) == bound


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("v = f'{${p}}'", "it is inside an f-string replacement field"),
        ("v = f'{x:${p}}'", "it is inside an f-string replacement field"),
        ("v = f'{d[\"${p}\"]}'", "it is inside an f-string replacement field"),
        ("v = f${p}", "it is glued to a name or number"),
        ("v = ${p}x", "it is glued to a name or number"),
        ("v = '${p:ident}'", "':ident' is only meaningful in SQL node code"),
        ("v = ${p:ident}", "':ident' is only meaningful in SQL node code"),
    ],
)
def test_unbindable_placeholders(code: str, reason: str) -> None:
    with pytest.raises(BindingError) as caught:
        bind_python(code, resolution())
    message = str(caught.value)
    assert message.startswith("cannot bind ${p")
    assert "on line 1 of the Python code" in message
    assert reason in message


@pytest.mark.parametrize(
    "code",
    ["v = '${p}", "v = ${p} +", "def f(:\n    '${p}'", "v = 1${p}", "  v = '${p}'"],
)
def test_code_that_does_not_parse_is_a_clear_error(code: str) -> None:
    with pytest.raises(BindingError, match="Python code does not parse"):
        bind_python(code, resolution())


def test_code_without_placeholders_is_returned_unchanged() -> None:
    code = "this is not python ${HOME} '"
    assert bind_python(code, resolution()) == code


def test_missing_trigger_path_fails_naming_it() -> None:
    with pytest.raises(MissingPath) as caught:
        bind_python("v = '${workflow.triggerMessage.value.user_id}'", resolution())
    assert caught.value.path == "workflow.triggerMessage.value.user_id"


def test_dataworks_kafka_example() -> None:
    value = '{"user_id": "1001", "action_type": "login", "timestamp": 1688888888}'
    code = "import json\nmessage_value_str = '${workflow.triggerMessage.value}'\n"
    bound = bind_python(code, resolution({}, trigger_message={"value": value}))
    tree = ast.parse(bound)
    statement = tree.body[1]
    assert isinstance(statement, ast.Assign)
    assert constant(statement.value) == value


def test_markers_never_collide_with_the_code() -> None:
    code = "_sluice_ph0_0x_ = '${p}'\nsluice_ph1_ = ${p}"
    assert bind_python(code, resolution()) == "_sluice_ph0_0x_ = 'value'\nsluice_ph1_ = 'value'"


def test_crlf_line_endings() -> None:
    code = "a = 1\r\nv = '${p}'\r\nw = r'''x\r\n${p}'''\r\n"
    bound = bind_python(code, resolution({"p": "it's"}))
    assert bound == "a = 1\r\nv = 'it\\'s'\r\nw = '''x\\nit\\'s'''\r\n"
