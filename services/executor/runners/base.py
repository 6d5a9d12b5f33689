"""What every runner gets and returns.

A runner is `async def run(ctx: AttemptContext) -> RunResult`. It does not handle timeouts or
termination itself: the attempt supervisor cancels it, and a runner that started processes kills
their process group when cancelled (see `process.run_process`). Exceptions fail the attempt with
reason `error`; their message goes to the attempt log.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.executor.claims import ClaimedNode
from services.executor.fencing import FenceLink
from services.executor.logs import LogBuffer
from services.executor.prepare import AnyNode, Prepared
from services.executor.sandbox import NodeUser
from shared.db.pool import Pool
from shared.params.outputs import OUTPUT_FILE_VAR
from shared.settings import Settings

# Where a shell or python node may write its outputs, inside its working directory.
OUTPUT_FILE_NAME = "sluice_outputs.json"
# Only these variables of the executor's own environment reach node processes: the executor's
# database URL and cloud credentials must not be readable by node code.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "SHELL")


@dataclass(frozen=True)
class RunResult:
    """How an attempt ended. `reason` is a short keyword when it failed; `outputs` is the
    JSON object it passes downstream, None when it produced none."""

    ok: bool
    exit_code: int | None = None
    reason: str | None = None
    outputs: dict[str, Any] | None = None

    @classmethod
    def from_exit_code(cls, code: int) -> RunResult:
        return cls(ok=code == 0, exit_code=code, reason=None if code == 0 else "exit_code")


@dataclass(frozen=True)
class RunnerServices:
    """Long-lived things runners use: the pool (to resolve connections) and settings (S3)."""

    pool: Pool
    settings: Settings
    kill_grace_s: float = 1.0
    # The user node processes run as (an executor running as root); None: the executor's own.
    node_user: NodeUser | None = None


@dataclass(frozen=True)
class ProcessSetup:
    """What starting a node process needs: code arguments, environment, working directory."""

    code_args: list[str]
    env: dict[str, str]
    cwd: str


@dataclass
class AttemptContext:
    """One attempt as a runner sees it; the working directory is created on first use."""

    node: AnyNode
    claimed: ClaimedNode
    prepared: Prepared
    log: LogBuffer
    services: RunnerServices
    # Moved forward on every lease renewal; the node's fence kills it when it passes.
    fence: FenceLink | None = None
    _workdir: Path | None = field(default=None, init=False)

    def workdir(self) -> Path:
        """A private temporary directory for this attempt, removed when it ends."""
        if self._workdir is None:
            c = self.claimed
            self._workdir = Path(
                tempfile.mkdtemp(prefix=f"sluice-{c.instance_id}-{c.attempt}-{c.node_id}-")
            )
            user = self.services.node_user
            if user is not None:
                # The node user writes its own files (TMPDIR) here; mkdtemp made it 0700.
                os.chown(self._workdir, *user.ids)
        return self._workdir

    def write_file(self, name: str, content: str) -> Path:
        """Write a file into the working directory (bytes that are not UTF-8 survive)."""
        path = self.workdir() / name
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
        if self.services.node_user is not None:
            # Readable by the node user whatever this process's umask.
            os.chown(path, *self.services.node_user.ids)
        return path

    async def process_setup(self, flag: str, file_name: str) -> ProcessSetup:
        """Working directory, files, environment and code arguments of a node process, made in
        a thread: file system calls can take milliseconds each on a busy disk."""
        return await asyncio.to_thread(self._process_setup, flag, file_name)

    def _process_setup(self, flag: str, file_name: str) -> ProcessSetup:
        cwd = self.workdir()
        env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
        env.setdefault("PATH", os.defpath)
        env["TMPDIR"] = str(cwd)
        user = self.services.node_user
        if user is not None:
            env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
        env.update(self.prepared.env)
        env[OUTPUT_FILE_VAR] = str(cwd / OUTPUT_FILE_NAME)
        for index, (var, content) in enumerate(sorted(self.prepared.files.items())):
            env[var] = str(self.write_file(f"{var.lower()}.{index}", content))
        return ProcessSetup(code_argv(self, flag, file_name), env, str(cwd))

    async def remove_workdir(self) -> None:
        """Delete the working directory, if one was made (in a thread: it may be large)."""
        if self._workdir is not None:
            workdir, self._workdir = self._workdir, None
            await asyncio.to_thread(shutil.rmtree, workdir, True)


# Code up to this size is passed as an argument (`-c`), saving a file per attempt; Linux refuses
# single arguments over 128 KiB.
MAX_INLINE_CODE = 64 * 1024


def code_argv(ctx: AttemptContext, flag: str, file_name: str) -> list[str]:
    """Interpreter arguments that run the prepared code: inline, or from a file in the working
    directory when it is large or cannot be an argument (NUL, text that is not UTF-8)."""
    code = ctx.prepared.code
    try:
        size = len(code.encode("utf-8"))
    except UnicodeEncodeError:
        size = MAX_INLINE_CODE + 1
    if size <= MAX_INLINE_CODE and "\x00" not in code:
        return [flag, code]
    return [str(ctx.write_file(file_name, code))]


class Runner(Protocol):
    async def __call__(self, ctx: AttemptContext) -> RunResult: ...
