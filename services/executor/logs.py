"""Attempt logs: captured output buffered per attempt and shipped in batches.

Output is stored in `attempt_logs` while the attempt runs (readable before it ends), in chunks
numbered from 1 per attempt. Each attempt's log is capped; the byte that crosses the cap is
replaced by a visible truncation marker and the rest is counted, not stored. Reading them back
is `shared.operations.logs`.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from uuid import UUID

from shared.db.pool import Executor
from shared.db.queries import load

Q = load(__file__)


class LogBuffer:
    """Output of one attempt not yet stored. Pure: no I/O, fed bytes, drained as numbered chunks.

    Bytes are decoded incrementally (a UTF-8 sequence split across reads stays intact); invalid
    bytes become U+FFFD and NUL, which PostgreSQL text cannot hold, becomes U+FFFD too.
    """

    def __init__(self, cap_bytes: int, chunk_chars: int = 256 * 1024) -> None:
        self.cap_bytes = cap_bytes
        self.chunk_chars = chunk_chars
        self.accepted_bytes = 0
        self.discarded_bytes = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[str] = []
        self._pending_chars = 0
        self._next_seq = 1
        self._last_char = ""
        self._closed = False

    @property
    def truncated(self) -> bool:
        return self.discarded_bytes > 0

    @property
    def pending_chars(self) -> int:
        return self._pending_chars

    def feed(self, data: bytes) -> None:
        """Add captured output; anything beyond the cap is counted and dropped."""
        if not data or self._closed:
            return
        if self.truncated:
            self.discarded_bytes += len(data)
            return
        room = self.cap_bytes - self.accepted_bytes
        if len(data) <= room:
            self.accepted_bytes += len(data)
            self._add(self._decoder.decode(data))
            return
        self.accepted_bytes += room
        self.discarded_bytes += len(data) - room
        self._add(self._decoder.decode(data[:room], final=True))
        self.note(f"log truncated at {self.cap_bytes} bytes")

    def note(self, text: str) -> None:
        """A line of sluice's own (exit code, timeout, error); never subject to the cap."""
        self._add(self._decoder.decode(b"", final=True))
        self._decoder.reset()
        if self._last_char not in ("", "\n"):
            self._add("\n")
        self._add(f"[sluice] {text}\n")

    def close(self) -> None:
        """The attempt ended: flush a split sequence and say how much output was dropped."""
        if self._closed:
            return
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._add(tail)
        if self.truncated:
            self.note(f"{self.discarded_bytes} more bytes of output were discarded")
        self._closed = True

    def take(self) -> list[tuple[int, str]]:
        """Drain what is pending as (seq, text) chunks of at most `chunk_chars` characters."""
        if not self._pending:
            return []
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        chunks = []
        for start in range(0, len(text), self.chunk_chars):
            chunks.append((self._next_seq, text[start : start + self.chunk_chars]))
            self._next_seq += 1
        return chunks

    def _add(self, text: str) -> None:
        if not text:
            return
        if "\x00" in text:
            text = text.replace("\x00", "\ufffd")
        self._pending.append(text)
        self._pending_chars += len(text)
        self._last_char = text[-1]


@dataclass(frozen=True)
class LogChunk:
    """One chunk to store, with the lease it is fenced by."""

    attempt_id: int
    node_id: int
    lease_token: UUID
    seq: int
    data: str


async def write_chunks(conn: Executor, chunks: list[LogChunk]) -> set[int]:
    """Store chunks of attempts that still hold their lease; return the attempt ids that did."""
    if not chunks:
        return set()
    rows = await conn.fetch(
        Q["insert_log_chunks"],
        [c.attempt_id for c in chunks],
        [c.node_id for c in chunks],
        [c.lease_token for c in chunks],
        [c.seq for c in chunks],
        [c.data for c in chunks],
    )
    return {int(r["attempt_id"]) for r in rows}
