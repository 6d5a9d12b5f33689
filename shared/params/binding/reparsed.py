"""Placeholders that a second interpreter would parse again as code: found and refused.

Binding keeps a value data for the interpreter that runs the node code. It cannot do so for a
program that node code hands text to as code: in `bash -c '... ${p} ...'` the outer shell expands
the value into the inner script, which the inner shell then parses. Such placeholders are refused
when a spec is validated (with the placeholders the spec itself defines) and again when an attempt
binds its code (with every parameter it has), naming the line and the safe form: read the value
from the environment inside the inner code (`"$SLUICE_PARAM_P"`), where it stays data.

- shell: the code argument of `sh`/`bash`/... `-c`, `su -c`, `python -c`, `perl -e`, `node -e`,
  `psql -c`, `awk` programs, `flock -c`, `script -c`; every argument of `eval` and `watch`; the
  action of `trap`; the remote command of `ssh`; stdin (here-document, here-string or pipe) of an
  interpreter that reads its program from stdin; through `sudo`, `env`, `xargs`, `timeout`,
  `nohup`, `find -exec` and similar wrappers, and inside `$(...)` and backquotes;
- python: the command of `os.system`, `os.popen`, `subprocess.*(..., shell=True)`,
  `asyncio.create_subprocess_shell`, `commands`/`subprocess.getoutput`, the code of `exec`,
  `eval` and `compile`, and the code argument of a `[..., "bash", "-c", code]` argument list;
- sql: a dollar-quoted body or the string body of a DO block or `CREATE FUNCTION ... AS '...'`
  (PL/pgSQL `EXECUTE` and `format()` parse text as SQL again), `COPY ... PROGRAM '...'`, and
  the query text given to `dblink`, `dblink_exec`, `query_to_xml` and their relatives.

What node code does with a value on its own (`cmd = "echo " + os.environ[...]; os.system(cmd)`)
is the node's code, as in any program; see docs/security.md.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass

from shared.params.binding import BindingError
from shared.params.binding.sql import literal_spans
from shared.params.resolution import Placeholder, find_placeholders

__all__ = ["Reparsed", "find_reparsed", "refuse_reparsed", "safe_form"]

Language = str  # "shell" | "python" | "sql"


@dataclass(frozen=True)
class Reparsed:
    """A placeholder that a second interpreter would parse as code."""

    placeholder: Placeholder
    line: int
    where: str
    safe: str

    def message(self, code: str) -> str:
        text = code[self.placeholder.start : self.placeholder.end]
        return (
            f"line {self.line}: {text} is inside {self.where}, which parses it again as code; "
            f"use {self.safe} there instead"
        )


def safe_form(path: str, language: Language) -> str:
    """How node code reads the value as data instead: its `SLUICE_PARAM_<NAME>` variable."""
    if language == "sql":
        return "a bind parameter (the placeholder outside any quotes) or a function argument"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", path):
        name, note = "SLUICE_PARAM_" + path.upper().replace("-", "_"), ""
    else:
        name, note = "SLUICE_PARAM_X", f" (with a parameter X defined as ${{{path}}})"
    if language == "python":
        return f'os.environ["{name}"]{note}'
    return f'"${name}"{note}'


def find_reparsed(
    code: str, language: Language, resolvable: Callable[[str], bool]
) -> list[Reparsed]:
    """Every placeholder of `code` that a second interpreter would parse as code."""
    placeholders = find_placeholders(code, resolvable)
    if not placeholders:
        return []
    if language == "shell":
        spans = _ShellScan(code).spans()
    elif language == "python":
        spans = _python_spans(code, placeholders)
    else:
        spans = _sql_spans(code, placeholders)
    found: list[Reparsed] = []
    for placeholder in placeholders:
        for start, end, where in spans:
            if start <= placeholder.start < end:
                found.append(
                    Reparsed(
                        placeholder=placeholder,
                        line=code.count("\n", 0, placeholder.start) + 1,
                        where=where,
                        safe=safe_form(placeholder.path, language),
                    )
                )
                break
    return found


def refuse_reparsed(code: str, language: Language, resolvable: Callable[[str], bool]) -> None:
    """Raise BindingError for the first placeholder a second interpreter would parse as code."""
    for found in find_reparsed(code, language, resolvable):
        text = code[found.placeholder.start : found.placeholder.end]
        raise BindingError(
            f"cannot bind {text} on line {found.line} of the {_LANGUAGE_NAMES[language]} code: "
            f"it is inside {found.where}, which parses it again as code; use {found.safe} there "
            "instead"
        )


_LANGUAGE_NAMES = {"shell": "shell", "python": "Python", "sql": "SQL"}


# -- shell ----------------------------------------------------------------------------------------

Span = tuple[int, int, str]

_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "yash", "rbash", "fish"})
_PYTHON_RE = re.compile(r"(python|pypy)[0-9.]*")
# Interpreter -> options that take the code as their argument.
_CODE_OPTIONS: dict[str, frozenset[str]] = {
    "python": frozenset({"-c"}),
    "perl": frozenset({"-e", "-E"}),
    "ruby": frozenset({"-e"}),
    "node": frozenset({"-e", "--eval", "-p", "--print"}),
    "nodejs": frozenset({"-e", "--eval", "-p", "--print"}),
    "php": frozenset({"-r"}),
    "lua": frozenset({"-e"}),
    "psql": frozenset({"-c", "--command"}),
    "mysql": frozenset({"-e", "--execute"}),
    "mariadb": frozenset({"-e", "--execute"}),
    "su": frozenset({"-c", "--command"}),
    "runuser": frozenset({"-c", "--command"}),
    "flock": frozenset({"-c", "--command"}),
    "script": frozenset({"-c", "--command"}),
}
# Options (of interpreters and wrappers) that take a separate argument which is not code.
_ARG_OPTIONS: dict[str, frozenset[str]] = {
    "shell": frozenset({"-o", "-O", "+o", "+O", "--rcfile", "--init-file"}),
    "python": frozenset({"-W", "-X", "-m"}),
    "psql": frozenset({"-d", "-h", "-p", "-U", "-f", "-v", "--set", "-o", "-L", "-P", "-T"}),
    "sudo": frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "-R"}),
    "env": frozenset({"-u", "-C", "--unset", "--chdir"}),
    "xargs": frozenset({"-I", "-n", "-P", "-d", "-L", "-s", "-E", "-a", "--delimiter"}),
    "timeout": frozenset({"-s", "-k", "--signal", "--kill-after"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "ionice": frozenset({"-c", "-n", "-p"}),
    "stdbuf": frozenset({"-i", "-o", "-e"}),
    "exec": frozenset({"-a"}),
    "doas": frozenset({"-u", "-C"}),
    "ssh": frozenset("-" + c for c in "BbcDEeFIiJLlmOopQRSWw"),
    "awk": frozenset({"-F", "-v", "-f", "--field-separator", "--assign", "--file"}),
    "su": frozenset({"-s", "-g", "-G", "--shell", "--group"}),
}
# Wrappers that run the rest of their arguments as a command, and how many leading positional
# arguments they take first (timeout's duration, chroot's directory, taskset's mask).
_WRAPPERS: dict[str, int] = {
    "sudo": 0,
    "doas": 0,
    "env": 0,
    "nohup": 0,
    "nice": 0,
    "time": 0,
    "timeout": 1,
    "exec": 0,
    "command": 0,
    "builtin": 0,
    "xargs": 0,
    "stdbuf": 0,
    "setsid": 0,
    "chroot": 1,
    "ionice": 0,
    "taskset": 1,
    "unbuffer": 0,
    "busybox": 0,
    "chronic": 0,
}
_RESERVED = frozenset(
    {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "esac"}
)
_ASSIGNMENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
_REDIRECT_RE = re.compile(r"[0-9]*(?:<>|>>|>&|<&|&>>|&>|>\||<|>)")
_AWKS = frozenset({"awk", "gawk", "mawk", "nawk", "busybox-awk"})
_STDIN_READERS = frozenset({"psql", "mysql", "mariadb", "perl", "ruby", "node", "php", "lua"})


@dataclass
class _Word:
    start: int
    end: int
    text: str  # with quotes removed (roughly: enough to recognise command names and options)


@dataclass
class _Command:
    words: list[_Word]
    stdin: list[tuple[int, int]]  # here-document bodies and here-strings
    piped_from: list[_Command] | None = None


class _ShellScan:
    """Splits shell code into simple commands of words, recursing into `$(...)` and backquotes."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.found: list[Span] = []
        # The last simple command seen: a here-document body that follows is its stdin.
        self.last: _Command | None = None

    def spans(self) -> list[Span]:
        self.commands(0, len(self.code))
        return self.found

    # -- lexing -----------------------------------------------------------------------------------

    def skip_quoted(self, i: int, end: int, analyse: bool = True) -> int:
        """Index past the quoted or substituted construct starting at code[i].

        With `analyse`, the commands inside a `$(...)` or backquotes are checked too; finding a
        closing bracket does not analyse, so each nested level is analysed once.
        """
        code = self.code
        if code[i] == "'":
            close = code.find("'", i + 1, end)
            return end if close < 0 else close + 1
        if code.startswith("$'", i):
            j = i + 2
            while j < end and code[j] != "'":
                j += 2 if code[j] == "\\" else 1
            return min(j + 1, end)
        if code[i] == '"' or code.startswith('$"', i):
            j = i + (2 if code[i] == "$" else 1)
            while j < end and code[j] != '"':
                if code[j] == "\\":
                    j += 2
                elif code.startswith("$(", j) or code.startswith("${", j) or code[j] == "`":
                    j = self.skip_quoted(j, end, analyse)
                else:
                    j += 1
            return min(j + 1, end)
        if code.startswith("$(", i):
            close = self.matching(i + 2, end, "(", ")")
            if analyse and not code.startswith("$((", i):
                self.commands(i + 2, close)
            return min(close + 1, end)
        if code.startswith("${", i):
            close = self.matching(i + 2, end, "{", "}")
            if analyse:
                self.expansions(i + 2, close)
            return min(close + 1, end)
        if code[i] == "`":
            j = i + 1
            while j < end and code[j] != "`":
                j += 2 if code[j] == "\\" else 1
            if analyse:
                self.commands(i + 1, j)
            return min(j + 1, end)
        return i + 1

    def expansions(self, i: int, end: int) -> None:
        """Check the command substitutions inside text the shell expands (`${x:-...}`, an
        unquoted here-document body)."""
        code = self.code
        while i < end:
            ch = code[i]
            if ch == "\\":
                i += 2
            elif ch == "`" or (ch == "$" and code[i + 1 : i + 2] in ("(", "{")):
                i = self.skip_quoted(i, end)
            else:
                i += 1

    def matching(self, i: int, end: int, opener: str, closer: str) -> int:
        depth = 0
        code = self.code
        while i < end:
            ch = code[i]
            if ch == "\\":
                i += 2
                continue
            if ch in "'\"`" or (ch == "$" and code[i + 1 : i + 2] in ("(", "{", "'", '"')):
                i = self.skip_quoted(i, end, analyse=False)
                continue
            if ch == opener:
                depth += 1
            elif ch == closer:
                if depth == 0:
                    return i
                depth -= 1
            i += 1
        return end

    def commands(self, start: int, end: int) -> None:
        """Analyse the commands in code[start:end]."""
        code = self.code
        i = start
        words: list[_Word] = []
        word_start: int | None = None
        heredocs: list[tuple[str, bool, bool]] = []
        stdin: list[tuple[int, int]] = []
        pipeline: list[_Command] = []
        here_string_next = False

        def end_word(at: int) -> None:
            nonlocal word_start, here_string_next
            if word_start is not None:
                raw = code[word_start:at]
                if here_string_next:
                    stdin.append((word_start, at))
                    here_string_next = False
                else:
                    words.append(_Word(word_start, at, _unquote(raw)))
                word_start = None

        def end_command(piped: bool) -> None:
            nonlocal words, stdin
            command = _Command(words, stdin, list(pipeline) if pipeline else None)
            if words or stdin:
                self.check(command)
                if piped:
                    pipeline.append(command)
            if not piped:
                pipeline.clear()
            words, stdin = [], []

        while i < end:
            ch = code[i]
            if ch == "\\":
                if word_start is None:
                    word_start = i
                i += 2
                continue
            if ch in "'\"`" or (ch == "$" and code[i + 1 : i + 2] in ("(", "{", "'", '"')):
                if word_start is None:
                    word_start = i
                i = self.skip_quoted(i, end)
                continue
            if ch == "#" and word_start is None:
                newline = code.find("\n", i, end)
                i = end if newline < 0 else newline
                continue
            if code.startswith("<<<", i):
                end_word(i)
                here_string_next = True
                i += 3
                continue
            if code.startswith("<<", i):
                end_word(i)
                j = i + 2 + (code[i + 2 : i + 3] == "-")
                while j < end and code[j] in " \t":
                    j += 1
                k = j
                while k < end and code[k] not in " \t\n;&|()<>":
                    k = self.skip_quoted(k, end) if code[k] in "'\"" else k + 1
                word = code[j:k]
                expanded = not any(c in word for c in "'\"\\")
                heredocs.append((_unquote(word), code[i + 2 : i + 3] == "-", expanded))
                i = k
                continue
            if ch in " \t":
                end_word(i)
                i += 1
                continue
            if ch == "\n":
                end_word(i)
                end_command(False)
                i += 1
                while heredocs:
                    delimiter, strip, expanded = heredocs.pop(0)
                    body_start = i
                    while i < end:
                        line_end = code.find("\n", i, end)
                        line_end = end if line_end < 0 else line_end
                        line = code[i:line_end]
                        if (line.lstrip("\t") if strip else line) == delimiter:
                            break
                        i = line_end + 1
                    body_end = min(i, end)
                    self.stdin_of_last(body_start, body_end)
                    if expanded:
                        self.expansions(body_start, body_end)
                    if i < end:
                        line_end = code.find("\n", i, end)
                        i = end if line_end < 0 else line_end + 1
                continue
            if ch in ";&|()":
                end_word(i)
                piped = ch == "|" and not code.startswith("||", i)
                end_command(piped)
                i += 2 if code.startswith(("||", "&&", ";;", "|&"), i) else 1
                continue
            if word_start is None:
                word_start = i
            i += 1
        end_word(end)
        end_command(False)

    def stdin_of_last(self, start: int, end: int) -> None:
        """A here-document body belongs to the command just ended: check it as that stdin."""
        if self.last is not None:
            self.check(_Command(self.last.words, [(start, end)], None), only_stdin=True)

    # -- rules ------------------------------------------------------------------------------------

    def flag(self, start: int, end: int, where: str) -> None:
        self.found.append((start, end, where))

    def check(self, command: _Command, only_stdin: bool = False) -> None:
        self.last = command
        words = list(command.words)
        # Leading assignments, redirections and reserved words are not the command.
        while words and (
            _ASSIGNMENT_RE.match(words[0].text)
            or words[0].text in _RESERVED
            or _REDIRECT_RE.fullmatch(words[0].text)
        ):
            words.pop(0)
        words = _without_redirections(words)
        self.check_words(words, command, only_stdin)

    def check_words(self, words: list[_Word], command: _Command, only_stdin: bool) -> None:
        while words:
            name = words[0].text.rsplit("/", 1)[-1]
            if name in _WRAPPERS:
                words = _after_wrapper(name, words)
                continue
            if name == "find":
                for index, word in enumerate(words):
                    if word.text in ("-exec", "-execdir", "-ok", "-okdir"):
                        inner = []
                        for later in words[index + 1 :]:
                            if later.text in (";", "+"):
                                break
                            inner.append(later)
                        self.check_words(inner, _Command(inner, []), only_stdin)
                return
            break
        if not words:
            return
        name = words[0].text.rsplit("/", 1)[-1]
        args = words[1:]
        reads_stdin = False
        if name in ("eval", "watch") and not only_stdin:
            for word in args:
                self.flag(word.start, word.end, f"an argument of `{name}`")
            return
        if name == "trap" and not only_stdin:
            action = [w for w in args if w.text not in ("--",) and not w.text.startswith("-")]
            if action:
                self.flag(action[0].start, action[0].end, "the action of `trap`")
            return
        if name == "ssh":
            positional = _positional(args, _ARG_OPTIONS["ssh"])
            if len(positional) > 1 and not only_stdin:
                for word in positional[1:]:
                    self.flag(word.start, word.end, "the remote command of `ssh`")
            reads_stdin = len(positional) == 1
        elif name in _SHELLS:
            code_index = _shell_code_index(args)
            if code_index is not None and not only_stdin:
                word = args[code_index]
                self.flag(word.start, word.end, f"the code argument of `{name} -c`")
            positional = _positional(args, _ARG_OPTIONS["shell"])
            reads_stdin = code_index is None and (
                not positional or any(w.text == "-s" for w in args)
            )
        elif name in _AWKS:
            if not any(w.text.startswith("-f") or w.text == "--file" for w in args):
                positional = _positional(args, _ARG_OPTIONS["awk"])
                if positional and not only_stdin:
                    self.flag(positional[0].start, positional[0].end, f"the `{name}` program")
        else:
            key = "python" if _PYTHON_RE.fullmatch(name) else name
            options = _CODE_OPTIONS.get(key)
            if options is not None:
                coded = False
                for index, word in enumerate(args):
                    option, _, attached = word.text.partition("=")
                    if option in options and index + 1 < len(args) and not attached:
                        coded = True
                        if not only_stdin:
                            target = args[index + 1]
                            self.flag(target.start, target.end, f"the code of `{name} {option}`")
                    elif any(word.text.startswith(o) and len(word.text) > len(o) for o in options):
                        # `-cCODE`, `--command=CODE`: the code is attached to the option.
                        coded = True
                        if not only_stdin:
                            self.flag(word.start, word.end, f"the code of `{name}`")
                positional = _positional(args, _ARG_OPTIONS.get(key, frozenset()))
                if key == "python":
                    reads_stdin = not coded and (not positional or positional[0].text == "-")
                elif key in _STDIN_READERS:
                    reads_stdin = not coded and not any(
                        w.text in ("-f", "--file") or w.text.startswith("-f") for w in args
                    )
        if reads_stdin:
            what = f"the program `{name}` reads from its standard input"
            for start, end in command.stdin:
                self.flag(start, end, what)
            for earlier in command.piped_from or []:
                for word in earlier.words:
                    self.flag(word.start, word.end, what + " (through a pipe)")
                for start, end in earlier.stdin:
                    self.flag(start, end, what + " (through a pipe)")


def _unquote(raw: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            out.append(raw[i + 1])
            i += 2
        elif ch in "'\"":
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _without_redirections(words: list[_Word]) -> list[_Word]:
    kept: list[_Word] = []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        match = _REDIRECT_RE.match(word.text)
        if match and not word.text.startswith(("-", "+")) and word.text[:1] in "0123456789<>&":
            # `> file`: the operator stands alone and the next word is its target.
            skip = match.end() == len(word.text)
            continue
        kept.append(word)
    return kept


def _positional(args: list[_Word], with_argument: frozenset[str]) -> list[_Word]:
    positional: list[_Word] = []
    skip = False
    options_done = False
    for word in args:
        if skip:
            skip = False
            continue
        if not options_done and word.text == "--":
            options_done = True
            continue
        if not options_done and word.text.startswith(("-", "+")) and len(word.text) > 1:
            skip = word.text in with_argument
            continue
        positional.append(word)
        options_done = True
    return positional


def _shell_code_index(args: list[_Word]) -> int | None:
    """Index in `args` of the code argument of `sh -c CODE` (None without `-c`)."""
    has_c = False
    skip = False
    for index, word in enumerate(args):
        text = word.text
        if skip:
            skip = False
            continue
        if text == "--":
            return index + 1 if has_c and index + 1 < len(args) else None
        if text in _ARG_OPTIONS["shell"]:
            skip = True
            continue
        if text.startswith("-") and not text.startswith("--") and len(text) > 1:
            has_c = has_c or "c" in text[1:]
            continue
        if text.startswith("--") or text.startswith("+"):
            continue
        return index if has_c else None
    return None


def _after_wrapper(name: str, words: list[_Word]) -> list[_Word]:
    rest = words[1:]
    options = _ARG_OPTIONS.get(name, frozenset())
    leading = _WRAPPERS[name]
    while rest:
        text = rest[0].text
        if text == "--":
            rest = rest[1:]
            break
        if name == "env" and _ASSIGNMENT_RE.match(text):
            rest = rest[1:]
            continue
        if text.startswith("-") and len(text) > 1:
            rest = rest[2:] if text in options else rest[1:]
            continue
        break
    return rest[leading:]


# -- python ---------------------------------------------------------------------------------------

_PY_SHELL_CALLS = frozenset({"system", "popen", "getoutput", "getstatusoutput", "popen2", "popen3"})
_PY_CODE_CALLS = frozenset({"exec", "eval", "compile", "execfile"})
_CODE_FLAGS = frozenset({"-c", "-e", "-E", "--eval", "--command", "-r"})
_PY_SUBPROCESS = frozenset(
    {"run", "call", "check_call", "check_output", "Popen", "create_subprocess_exec", "spawn"}
)


def _is_interpreter(program: str) -> bool:
    """Whether a program run from an argument list takes code after `-c`/`-e`."""
    name = program.rsplit("/", 1)[-1]
    return name in _SHELLS or name in _CODE_OPTIONS or _PYTHON_RE.fullmatch(name) is not None


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _python_spans(code: str, placeholders: list[Placeholder]) -> list[Span]:
    # Placeholders become names of the same length, so offsets stay put and the code parses
    # whether a placeholder sits inside a literal or stands for one.
    marked = list(code)
    for p in placeholders:
        marked[p.start : p.end] = "_" * (p.end - p.start)
    text = "".join(marked)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    starts = [0]
    for line in text.split("\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def span(node: ast.AST) -> tuple[int, int]:
        # ast offsets count UTF-8 bytes within a line.
        def offset(line: int, col: int) -> int:
            row = text.split("\n")[line - 1]
            return starts[line - 1] + len(row.encode()[:col].decode(errors="ignore"))

        assert isinstance(node, ast.expr)
        end_line = node.end_lineno or node.lineno
        end_col = node.end_col_offset or node.col_offset
        return offset(node.lineno, node.col_offset), offset(end_line, end_col)

    found: list[Span] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node.func)
        first = node.args[0] if node.args else None
        for keyword in node.keywords:
            if keyword.arg in ("args", "cmd", "command", "source") and first is None:
                first = keyword.value
        if first is None:
            continue
        shell = any(
            k.arg == "shell" and not (isinstance(k.value, ast.Constant) and not k.value.value)
            for k in node.keywords
        )
        if name in _PY_SHELL_CALLS or name == "create_subprocess_shell":
            found.append((*span(first), f"the command of `{name}()`, which a shell parses"))
        elif name in _PY_CODE_CALLS:
            found.append((*span(first), f"the code given to `{name}()`"))
        elif name in _PY_SUBPROCESS and shell:
            found.append((*span(first), f"the command of `{name}(..., shell=True)`"))
        elif name in _PY_SUBPROCESS:
            # `run(["bash", "-c", code])` or `create_subprocess_exec("bash", "-c", code)`.
            items = first.elts if isinstance(first, ast.List | ast.Tuple) else node.args
            program = items[0] if items else None
            if not (isinstance(program, ast.Constant) and _is_interpreter(str(program.value))):
                continue
            for index, item in enumerate(items[:-1]):
                if index >= 1 and isinstance(item, ast.Constant) and item.value in _CODE_FLAGS:
                    where = f"the code argument after `{item.value}`"
                    found.append((*span(items[index + 1]), where))
    return found


# -- sql ------------------------------------------------------------------------------------------

_SQL_EXECUTING = re.compile(
    r"\b(dblink|dblink_exec|dblink_open|dblink_send_query|query_to_xml|query_to_xmlschema|"
    r"query_to_xml_and_xmlschema|ts_stat|ts_rewrite)\s*\(",
    re.IGNORECASE,
)
_PROGRAM_RE = re.compile(r"\bprogram\s*$", re.IGNORECASE)


_DO_RE = re.compile(r"\bdo\s*$", re.IGNORECASE)
_AS_RE = re.compile(r"\bas\s*$", re.IGNORECASE)
_ROUTINE_RE = re.compile(r"^\s*create\s+(or\s+replace\s+)?(function|procedure)\b", re.IGNORECASE)


def _is_body(code: str, start: int) -> bool:
    """Whether the literal at `start` is a DO block or CREATE FUNCTION body (`AS '...'`)."""
    before = code[max(0, start - 20) : start]
    if _DO_RE.search(before):
        return True
    if not _AS_RE.search(before):
        return False
    statement = code[code.rfind(";", 0, start) + 1 : start]
    return _ROUTINE_RE.search(statement) is not None


def _sql_spans(code: str, placeholders: list[Placeholder]) -> list[Span]:
    literals = literal_spans(code, placeholders)
    found: list[Span] = []
    for start, end, kind in literals:
        if kind == "dollar":
            found.append(
                (start, end, "a dollar-quoted body (a function or DO block, run as code later)")
            )
        elif _PROGRAM_RE.search(code[max(0, start - 40) : start]):
            found.append((start, end, "the command of `COPY ... PROGRAM`, which a shell runs"))
        elif kind != "identifier" and _is_body(code, start):
            found.append((start, end, "a function or DO body written as a string, run as code"))
    for match in _SQL_EXECUTING.finditer(code):
        depth, j = 0, match.end()
        while j < len(code):
            if code[j] == "(":
                depth += 1
            elif code[j] == ")":
                if depth == 0:
                    break
                depth -= 1
            j += 1
        for start, end, kind in literals:
            if match.end() <= start < j and kind != "identifier":
                found.append((start, end, f"the query text given to `{match.group(1)}()`"))
    return found
