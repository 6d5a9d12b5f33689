"""Bind placeholders into shell node code as environment-variable references.

Each placeholder becomes a reference to `SLUICE_P_<n>`, an environment variable holding the value,
so the shell only ever expands the value and never parses it:

- unquoted: `"${SLUICE_P_1}"` (quoted so the value is neither word-split nor globbed);
- inside double quotes, an unquoted here-document or a double-quoted `${var:-word}`:
  `${SLUICE_P_1}`;
- inside single quotes: the quote is closed and reopened, `'"${SLUICE_P_1}"'`;
- inside `$'...'`: likewise, `'"${SLUICE_P_1}"$'`;
- inside a comment or after a backslash (`\\${x}`): left alone, as the shell would.

A small scanner tracks the quoting state: backslash escapes, '...', "...", $'...', $"...",
$(...), backquotes, ${...}, comments, `case` patterns and here-documents. A here-document body is
treated as double-quoted context (that is how the shell expands it); a placeholder in a quoted
here-document (`<<'EOF'`) is rejected because the shell would not expand the reference there.

Arithmetic evaluates text as an expression, and bash expands `$(...)` inside array subscripts
while doing so, so a value that reaches arithmetic can run commands. Placeholders inside `$((...))`,
`((...))`, `$[...]`, a `${var[...]}` subscript or a `${var:offset}` offset are therefore rejected.
What a script does with the value afterwards (`eval`, `let`, `[[ $v -eq 1 ]]`) is up to the script;
every value is also in `SLUICE_PARAM_<NAME>`.

Linux limits one environment entry to 128 KiB (and all of them together to about 2 MiB), so a large
value travels in a file instead: `files` maps `SLUICE_P_<n>_FILE` to the value, the runner writes
it to a file and exports that file's path as `SLUICE_P_<n>_FILE`, and the code starts by reading
the file into `SLUICE_P_<n>` (`read -d ''` keeps every byte, trailing newlines included). That
loader shares the first command line, after a `#!` line if there is one, so line numbers in the
shell's error messages still match the node code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.params.binding import BindingError
from shared.params.binding.reparsed import refuse_reparsed
from shared.params.resolution import Placeholder, Resolver, find_placeholders

__all__ = ["ENV_PREFIX", "MAX_ENV_TOTAL", "MAX_ENV_VALUE", "ShellBinding", "bind_shell"]

ENV_PREFIX = "SLUICE_P_"
# Values larger than this, or beyond this much in total, go through files (see above).
MAX_ENV_VALUE = 32 * 1024
MAX_ENV_TOTAL = 256 * 1024

_CMD_KINDS = frozenset({"cmd", "cmd_paren", "cmd_tick"})
_ARITH_KINDS = frozenset({"arith_paren", "arith_bracket"})
_WORD_BREAK = frozenset(" \t\n;&|()<>")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!-]")


@dataclass(frozen=True)
class ShellBinding:
    """Bound shell code and what the runner must provide for it.

    `env`: variables to set. `files`: variable name -> content; the runner writes each content to
    a file (bytes: `content.encode("utf-8", "surrogateescape")`) and sets the variable to its path.
    """

    code: str
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class _Frame:
    kind: str
    quoted: bool = False  # param: the ${...} sits inside double quotes
    arith: bool = False  # param: the rest of the ${...} is an arithmetic offset
    depth: int = 0  # open parentheses/brackets inside this frame
    cases: int = 0  # open `case ... esac` inside a command frame
    delimiter: str = ""  # here-document terminator
    strip_tabs: bool = False  # `<<-`: the terminator line may be indented with tabs


@dataclass
class _Scanner:
    code: str
    placeholders: dict[int, Placeholder]
    resolver: Resolver
    out: list[str] = field(default_factory=list)
    emitted: int = 0
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    env_size: int = 0
    names: dict[tuple[str, str | None], str] = field(default_factory=dict)
    stack: list[_Frame] = field(default_factory=lambda: [_Frame("cmd")])
    pending: list[_Frame] = field(default_factory=list)
    heredocs: list[_Frame] = field(default_factory=list)

    def run(self) -> str:
        code = self.code
        i = 0
        while i < len(code):
            frame = self.stack[-1]
            if frame.kind in ("heredoc", "heredoc_quoted") and (i == 0 or code[i - 1] == "\n"):
                line_end = code.find("\n", i)
                line_end = len(code) if line_end < 0 else line_end
                line = code[i:line_end]
                if (line.lstrip("\t") if frame.strip_tabs else line) == frame.delimiter:
                    self.stack.pop()
                    if self.heredocs:
                        self.stack.append(self.heredocs.pop(0))
                        i = line_end + 1
                    else:
                        i = line_end
                    continue
            placeholder = self.placeholders.get(i)
            if placeholder is not None:
                self._bind(placeholder)
                i = placeholder.end
                continue
            if frame.kind in _CMD_KINDS:
                i = self._command(frame, i)
            elif frame.kind == "dq" or frame.kind == "heredoc":
                i = self._double_quoted(frame, i)
            elif frame.kind == "sq":
                i = self._close_at(i, "'")
            elif frame.kind == "ansi":
                i = i + 2 if code[i] == "\\" else self._close_at(i, "'")
            elif frame.kind == "heredoc_quoted":
                i += 1
            elif frame.kind == "param":
                i = self._param(frame, i)
            else:
                i = self._arith(frame, i)
        self.out.append(code[self.emitted :])
        return "".join(self.out)

    # -- contexts ------------------------------------------------------------------------------

    def _close_at(self, i: int, closer: str) -> int:
        if self.code[i] == closer:
            self.stack.pop()
        return i + 1

    def _word_start(self, i: int) -> bool:
        return i == 0 or self.code[i - 1] in _WORD_BREAK

    def _keyword_at(self, i: int, word: str) -> bool:
        end = i + len(word)
        return (
            self._word_start(i)
            and self.code.startswith(word, i)
            and (end == len(self.code) or self.code[end] in _WORD_BREAK)
        )

    def _dollar(self, i: int, quoted: bool) -> int:
        """Handle a `$` at i (outside single quotes); return the next position."""
        code = self.code
        nxt = code[i + 1 : i + 2]
        if code.startswith("$((", i):
            self.stack.append(_Frame("arith_paren"))
            return i + 3
        if nxt == "(":
            self.stack.append(_Frame("cmd_paren"))
            return i + 2
        if nxt == "[":
            self.stack.append(_Frame("arith_bracket"))
            return i + 2
        if nxt == "{":
            return self._open_param(i + 2, quoted)
        if nxt == "$":
            return i + 2
        if not quoted and nxt == "'":
            self.stack.append(_Frame("ansi"))
            return i + 2
        if not quoted and nxt == '"':
            self.stack.append(_Frame("dq"))
            return i + 2
        return i + 1

    def _command(self, frame: _Frame, i: int) -> int:
        code = self.code
        ch = code[i]
        if ch == "\\":
            return i + 2
        if ch == "'":
            self.stack.append(_Frame("sq"))
            return i + 1
        if ch == '"':
            self.stack.append(_Frame("dq"))
            return i + 1
        if ch == "`":
            if frame.kind == "cmd_tick":
                self.stack.pop()
            else:
                self.stack.append(_Frame("cmd_tick"))
            return i + 1
        if ch == "$":
            return self._dollar(i, quoted=False)
        if ch == "#" and self._word_start(i):
            end = code.find("\n", i)
            return len(code) if end < 0 else end
        if ch == "(":
            if self._word_start(i) and code.startswith("((", i):
                self.stack.append(_Frame("arith_paren"))
                return i + 2
            frame.depth += 1
            return i + 1
        if ch == ")":
            if frame.depth > 0:
                frame.depth -= 1
            elif frame.kind == "cmd_paren" and frame.cases == 0:
                self.stack.pop()
            return i + 1
        if ch == "<" and code.startswith("<<", i):
            return self._heredoc_operator(i)
        if ch == "\n" and self.pending:
            self.heredocs.extend(self.pending)
            self.pending.clear()
            self.stack.append(self.heredocs.pop(0))
            return i + 1
        if self._keyword_at(i, "case"):
            frame.cases += 1
            return i + 4
        if self._keyword_at(i, "esac"):
            frame.cases = max(0, frame.cases - 1)
            return i + 4
        return i + 1

    def _double_quoted(self, frame: _Frame, i: int) -> int:
        ch = self.code[i]
        if ch == '"' and frame.kind == "dq":
            self.stack.pop()
            return i + 1
        if ch == "\\":
            return i + 2
        if ch == "`":
            self.stack.append(_Frame("cmd_tick"))
            return i + 1
        if ch == "$":
            return self._dollar(i, quoted=True)
        return i + 1

    def _param(self, frame: _Frame, i: int) -> int:
        ch = self.code[i]
        if ch == "}":
            self.stack.pop()
            return i + 1
        if ch == "\\":
            return i + 2
        if ch == "'" and not frame.quoted:
            self.stack.append(_Frame("sq"))
            return i + 1
        if ch == '"':
            self.stack.append(_Frame("dq"))
            return i + 1
        if ch == "`":
            self.stack.append(_Frame("cmd_tick"))
            return i + 1
        if ch == "$":
            return self._dollar(i, quoted=frame.quoted)
        return i + 1

    def _arith(self, frame: _Frame, i: int) -> int:
        code = self.code
        ch = code[i]
        if ch == "\\":
            return i + 2
        if ch == '"':
            self.stack.append(_Frame("dq"))
            return i + 1
        if ch == "`":
            self.stack.append(_Frame("cmd_tick"))
            return i + 1
        if ch == "$":
            return self._dollar(i, quoted=False)
        opener, closer = ("(", ")") if frame.kind == "arith_paren" else ("[", "]")
        if ch == opener:
            frame.depth += 1
        elif ch == closer:
            if frame.depth > 0:
                frame.depth -= 1
            elif frame.kind == "arith_bracket":
                self.stack.pop()
            elif code.startswith("))", i):
                self.stack.pop()
                return i + 2
        return i + 1

    def _open_param(self, i: int, quoted: bool) -> int:
        """Enter a `${...}` that is not a placeholder; i is just past the `${`."""
        code = self.code
        frame = _Frame("param", quoted=quoted)
        if code[i : i + 1] in ("!", "#") and code[i + 1 : i + 2] != "}":
            i += 1
        name = _NAME_RE.match(code, i)
        if name is not None:
            i = name.end()
        if code[i : i + 1] == "[":
            end = i + 1
            depth = 0
            while end < len(code) and not (code[end] == "]" and depth == 0):
                depth += {"[": 1, "]": -1}.get(code[end], 0)
                end += 1
            self._reject_inside(i, end, "an array subscript, which bash evaluates as arithmetic")
            i = end + 1
        if code[i : i + 1] == ":" and code[i + 1 : i + 2] not in ("-", "=", "+", "?"):
            frame.arith = True
        self.stack.append(frame)
        return i

    def _heredoc_operator(self, i: int) -> int:
        code = self.code
        if code.startswith("<<<", i):
            return i + 3
        j = i + 2
        strip_tabs = code[j : j + 1] == "-"
        if strip_tabs:
            j += 1
        while j < len(code) and code[j] in " \t":
            j += 1
        word: list[str] = []
        quoted = False
        while j < len(code) and code[j] not in _WORD_BREAK:
            ch = code[j]
            if ch in "'\"":
                close = code.find(ch, j + 1)
                close = len(code) if close < 0 else close
                word.append(code[j + 1 : close])
                quoted = True
                j = close + 1
            elif ch == "\\":
                word.append(code[j + 1 : j + 2])
                quoted = True
                j += 2
            else:
                word.append(ch)
                j += 1
        if word:
            kind = "heredoc_quoted" if quoted else "heredoc"
            self.pending.append(_Frame(kind, delimiter="".join(word), strip_tabs=strip_tabs))
        return j

    # -- placeholders --------------------------------------------------------------------------

    def _reject_inside(self, start: int, end: int, where: str) -> None:
        for position, placeholder in self.placeholders.items():
            if start <= position < end:
                self._fail(placeholder, f"it is inside {where}")

    def _fail(self, placeholder: Placeholder, why: str) -> None:
        line = self.code.count("\n", 0, placeholder.start) + 1
        text = self.code[placeholder.start : placeholder.end]
        raise BindingError(f"cannot bind {text} on line {line} of the shell code: {why}")

    def _variable(self, placeholder: Placeholder) -> str:
        name = self.names.get(placeholder.key)
        if name is None:
            value = self.resolver.resolve(placeholder.path, placeholder.default)
            if "\x00" in value:
                self._fail(placeholder, "its value contains a NUL character")
            name = f"{ENV_PREFIX}{len(self.names) + 1}"
            self.names[placeholder.key] = name
            size = len(value.encode("utf-8", "surrogateescape")) + len(name) + 2
            if size > MAX_ENV_VALUE or self.env_size + size > MAX_ENV_TOTAL:
                self.files[f"{name}_FILE"] = value
            else:
                self.env[name] = value
                self.env_size += size
        return name

    def _bind(self, placeholder: Placeholder) -> None:
        if placeholder.ident:
            self._fail(placeholder, "':ident' is only meaningful in SQL node code")
        for frame in reversed(self.stack):
            if frame.kind in _CMD_KINDS:
                break
            if frame.kind in _ARITH_KINDS or frame.arith:
                self._fail(placeholder, "arithmetic would evaluate the value as an expression")
        top = self.stack[-1]
        if top.kind == "heredoc_quoted":
            self._fail(placeholder, "a quoted here-document does not expand variables")
        reference = "${" + self._variable(placeholder) + "}"
        if top.kind == "sq":
            replacement = f"'\"{reference}\"'"
        elif top.kind == "ansi":
            replacement = f"'\"{reference}\"$'"
        elif top.kind in ("dq", "heredoc") or (top.kind == "param" and top.quoted):
            replacement = reference
        else:
            replacement = f'"{reference}"'
        self.out.append(self.code[self.emitted : placeholder.start])
        self.out.append(replacement)
        self.emitted = placeholder.end


def bind_shell(code: str, resolver: Resolver) -> ShellBinding:
    """Bind every placeholder in shell `code`; the runner must export `env` to the process.

    Raises MissingPath for a placeholder that does not resolve and BindingError for one that
    cannot be bound safely (arithmetic, quoted here-document, `:ident`, NUL in the value).
    """
    placeholders = {p.start: p for p in find_placeholders(code, resolver.resolvable)}
    if not placeholders:
        return ShellBinding(code=code, env={})
    refuse_reparsed(code, "shell", resolver.resolvable)
    scanner = _Scanner(code, placeholders, resolver)
    bound = scanner.run()
    if scanner.files:
        bound = _with_loader(bound, [name.removesuffix("_FILE") for name in scanner.files])
    return ShellBinding(code=bound, env=scanner.env, files=scanner.files)


def _with_loader(code: str, names: list[str]) -> str:
    """Prefix the first command line of `code` with reads of the file-borne values."""
    loader = "".join(f"IFS= read -r -d '' {name} < \"${{{name}_FILE}}\" || :; " for name in names)
    if code.startswith("#!"):
        end = code.find("\n")
        if end < 0:
            return f"{code}\n{loader}"
        return f"{code[: end + 1]}{loader}{code[end + 1 :]}"
    return loader + code
