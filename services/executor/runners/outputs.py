"""Reading what a shell or python node wrote to `$SLUICE_OUTPUT_FILE` once its process ended.

The file lies in the attempt's working directory, which node code can write to (and, when the
executor runs as root, as another user). The executor therefore opens it without following
links and accepts only a regular file with one link: a node must not get the executor to read
a file the node itself could not (contract: no node reads secrets).
"""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Any

from services.executor.runners.base import OUTPUT_FILE_NAME, AttemptContext, RunResult
from shared.params.outputs import MAX_OUTPUT_BYTES, OUTPUT_FILE_VAR, OutputsError, parse_outputs


def read_output_file(node: str, path: str) -> dict[str, Any] | None:
    """The outputs in the file at `path`, None when there is no file.

    Raises OutputsError naming `node` when it is not a plain file, too big, or not a JSON object.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        # ELOOP: a symbolic link; anything else: unreadable.
        raise OutputsError(
            f"node {node!r}: ${OUTPUT_FILE_VAR} cannot be read as a plain file ({exc.strerror})"
        ) from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise OutputsError(f"node {node!r}: ${OUTPUT_FILE_VAR} must be a plain file")
        # One byte more than allowed is enough to know it is too big, however big it is.
        data = file.read(MAX_OUTPUT_BYTES + 1)
    if len(data) > MAX_OUTPUT_BYTES:
        raise OutputsError(
            f"node {node!r}: ${OUTPUT_FILE_VAR} holds more than the {MAX_OUTPUT_BYTES} bytes "
            "allowed"
        )
    return parse_outputs(node, data)


async def with_outputs(ctx: AttemptContext, result: RunResult) -> RunResult:
    """`result` with the node's outputs when it succeeded; a failure (reason `outputs`, the
    problem in the log) when what it wrote cannot be passed downstream."""
    if not result.ok:
        return result
    path = str(ctx.workdir() / OUTPUT_FILE_NAME)
    try:
        outputs = await asyncio.to_thread(read_output_file, ctx.node.name, path)
    except OutputsError as exc:
        ctx.log.note(f"outputs: {exc}")
        return RunResult(ok=False, exit_code=result.exit_code, reason="outputs")
    return RunResult(ok=True, exit_code=result.exit_code, outputs=outputs)
