"""`shell` nodes: bash (no profile, no rc files) runs the node's code in the attempt's working
directory; code over 64 KiB is run from a file there.

A node whose whole code is `true` or `:` is a no-op: the attempt supervisor completes it
in-process without a subprocess (it could not observe its environment anyway); the dispatch
benchmark uses it to measure sluice's own overhead.
"""

from __future__ import annotations

from services.executor.runners.base import AttemptContext, RunResult
from services.executor.runners.outputs import with_outputs
from services.executor.runners.process import run_process

NOOP_CODE = frozenset({"true", ":"})


def is_noop(code: str) -> bool:
    """True for code that does nothing and always succeeds."""
    return code.strip() in NOOP_CODE


async def run(ctx: AttemptContext) -> RunResult:
    setup = await ctx.process_setup("-c", "node.sh")
    code = await run_process(
        ["bash", "--noprofile", "--norc", *setup.code_args],
        env=setup.env,
        cwd=setup.cwd,
        log=ctx.log,
        grace_s=ctx.services.kill_grace_s,
        fence=ctx.fence,
        user=ctx.services.node_user.ids if ctx.services.node_user else None,
    )
    return await with_outputs(ctx, RunResult.from_exit_code(code))
