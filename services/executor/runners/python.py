"""`python` nodes: the executor's own interpreter in isolated mode (`-I`: no PYTHON* variables,
no user site-packages, no script directory on sys.path), unbuffered so output streams live."""

from __future__ import annotations

import sys

from services.executor.runners.base import AttemptContext, RunResult
from services.executor.runners.outputs import with_outputs
from services.executor.runners.process import run_process


async def run(ctx: AttemptContext) -> RunResult:
    setup = await ctx.process_setup("-c", "node.py")
    code = await run_process(
        [sys.executable, "-I", "-u", *setup.code_args],
        env=setup.env,
        cwd=setup.cwd,
        log=ctx.log,
        grace_s=ctx.services.kill_grace_s,
        fence=ctx.fence,
        user=ctx.services.node_user.ids if ctx.services.node_user else None,
    )
    return await with_outputs(ctx, RunResult.from_exit_code(code))
