"""The key layout of a taquba database (pure functions, no I/O).

Every internal key is ``[tag][version=0x01][fields...]``. Fields are encoded so that byte order
equals the order scans need:

- timestamps are big-endian unsigned 64-bit milliseconds, priorities big-endian unsigned 32-bit;
- a queue name followed by more fields is ``[length byte][UTF-8]``, so queue ``a`` never
  prefixes queue ``ab``;
- job ids are raw ASCII and always last.

Key spaces (see ``docs/design/queue-internals.md`` for what each transition writes):

====  ===========  ==========================================  ====================================
tag   space        key                                         value
====  ===========  ==========================================  ====================================
0x01  pending      01 01 qlen queue priority:u32 id            job record
0x02  claimed      02 01 qlen queue id                         job record
0x03  scheduled    03 01 run_at:u64 qlen queue id              job record
0x04  done         04 01 completed_at:u64 qlen queue id        job record (kept done jobs only)
0x05  dead         05 01 qlen queue id                         job record
0x06  index        06 01 id                                    the job's current record key
0x07  dedup        07 01 qlen queue dedup_key                  job id
0x08  cursor       08 01 qlen queue                            persisted claim-scan state
0x09  stats        09 01 qlen queue                            folded per-queue counters
0x0A  stats delta  0A 01 qlen queue seq:u128                   counter deltas of one transaction
0x0B  quarantine   0B 01 qlen queue original_key               an undecodable record, set aside
0x0C  owner        0C 01                                       the owner record (heartbeat)
0x0D  history      0D 01 idlen id seq:u64                      one attempt-history entry
0xFF  user KV      FF key                                      caller bytes
====  ===========  ==========================================  ====================================

No key space is a prefix of another, and the user space (0xFF) sorts after all of them.
"""

from __future__ import annotations

import enum
import struct
import unicodedata
from dataclasses import dataclass

from ._errors import InvalidQueueName

__all__ = [
    "MAX_QUEUE_NAME_BYTES",
    "Space",
    "claimed_key",
    "claimed_prefix",
    "cursor_key",
    "dead_key",
    "dead_prefix",
    "dedup_key",
    "done_key",
    "encode_queue",
    "history_key",
    "history_prefix",
    "index_key",
    "key_time",
    "parse_job_key",
    "pending_key",
    "pending_prefix",
    "quarantine_key",
    "quarantine_prefix",
    "scheduled_key",
    "space_prefix",
    "stats_delta_key",
    "stats_delta_prefix",
    "stats_delta_seq",
    "stats_key",
    "user_key",
    "validate_queue_name",
]

MAX_QUEUE_NAME_BYTES = 255
"""The longest queue name, in UTF-8 bytes."""

VERSION = 0x01
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Space(enum.IntEnum):
    """The tag byte of each key space."""

    PENDING = 0x01
    CLAIMED = 0x02
    SCHEDULED = 0x03
    DONE = 0x04
    DEAD = 0x05
    INDEX = 0x06
    DEDUP = 0x07
    CURSOR = 0x08
    STATS = 0x09
    STATS_DELTA = 0x0A
    QUARANTINE = 0x0B
    OWNER = 0x0C
    HISTORY = 0x0D
    USER = 0xFF


def validate_queue_name(queue_name: object) -> str:
    """Return ``queue_name`` if it is a usable queue name, else raise `InvalidQueueName`.

    A name is 1 to 255 UTF-8 bytes with no control characters.
    """
    if not isinstance(queue_name, str):
        raise InvalidQueueName(queue_name, "queue name must be a str")
    if not queue_name:
        raise InvalidQueueName(queue_name, "queue name must not be empty")
    try:
        encoded = queue_name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidQueueName(queue_name, "queue name must be valid UTF-8") from exc
    if len(encoded) > MAX_QUEUE_NAME_BYTES:
        raise InvalidQueueName(
            queue_name, f"queue name exceeds the maximum length of {MAX_QUEUE_NAME_BYTES} bytes"
        )
    if any(unicodedata.category(ch) == "Cc" for ch in queue_name):
        raise InvalidQueueName(queue_name, "queue name must not contain control characters")
    return queue_name


def encode_queue(queue: str) -> bytes:
    """Length-prefixed UTF-8 encoding of a (validated) queue name."""
    raw = queue.encode("utf-8")
    return bytes((len(raw),)) + raw


def space_prefix(space: Space) -> bytes:
    """The prefix shared by every key of ``space``."""
    if space is Space.USER:
        return b"\xff"
    return bytes((space, VERSION))


def pending_prefix(queue: str) -> bytes:
    """Prefix of one queue's pending keys, in claim order."""
    return space_prefix(Space.PENDING) + encode_queue(queue)


def pending_key(queue: str, priority: int, job_id: str) -> bytes:
    """Key of a pending job: claim order is priority, then id."""
    return pending_prefix(queue) + _U32.pack(priority) + job_id.encode("ascii")


def claimed_prefix(queue: str) -> bytes:
    """Prefix of one queue's claimed keys."""
    return space_prefix(Space.CLAIMED) + encode_queue(queue)


def claimed_key(queue: str, job_id: str) -> bytes:
    """Key of a claimed job; stable for the life of the claim."""
    return claimed_prefix(queue) + job_id.encode("ascii")


def scheduled_key(run_at_ms: int, queue: str, job_id: str) -> bytes:
    """Key of a scheduled job; the space is ordered by due time across all queues."""
    return (
        space_prefix(Space.SCHEDULED)
        + _U64.pack(run_at_ms)
        + encode_queue(queue)
        + job_id.encode("ascii")
    )


def done_key(completed_at_ms: int, queue: str, job_id: str) -> bytes:
    """Key of a kept done job; the space is ordered by completion time across all queues."""
    return (
        space_prefix(Space.DONE)
        + _U64.pack(completed_at_ms)
        + encode_queue(queue)
        + job_id.encode("ascii")
    )


def key_time(key: bytes) -> int:
    """The time field (ms) of a scheduled or done key: the u64 right after the tag."""
    (stamp,) = _U64.unpack_from(key, 2)
    return stamp


def dead_prefix(queue: str) -> bytes:
    """Prefix of one queue's dead-letter keys."""
    return space_prefix(Space.DEAD) + encode_queue(queue)


def dead_key(queue: str, job_id: str) -> bytes:
    """Key of a dead-lettered job."""
    return dead_prefix(queue) + job_id.encode("ascii")


def index_key(job_id: str) -> bytes:
    """Key of the index entry that points a job id at its current record key."""
    return space_prefix(Space.INDEX) + job_id.encode("ascii")


def dedup_key(queue: str, key: str) -> bytes:
    """Key of the dedup entry for ``key`` on ``queue``."""
    return space_prefix(Space.DEDUP) + encode_queue(queue) + key.encode("utf-8")


def cursor_key(queue: str) -> bytes:
    """Key of a queue's persisted claim-scan state."""
    return space_prefix(Space.CURSOR) + encode_queue(queue)


def stats_key(queue: str) -> bytes:
    """Key of a queue's folded counters."""
    return space_prefix(Space.STATS) + encode_queue(queue)


def stats_delta_prefix(queue: str) -> bytes:
    """Prefix of a queue's unfolded counter deltas."""
    return space_prefix(Space.STATS_DELTA) + encode_queue(queue)


def stats_delta_key(queue: str, seq: int) -> bytes:
    """Key of one transaction's counter deltas; ``seq`` is a unique 128-bit number."""
    return stats_delta_prefix(queue) + seq.to_bytes(16, "big")


def stats_delta_seq(queue: str, key: bytes) -> int | None:
    """The sequence number of ``queue``'s delta key ``key``, or None if it is not well formed."""
    prefix = stats_delta_prefix(queue)
    if len(key) != len(prefix) + 16 or not key.startswith(prefix):
        return None
    return int.from_bytes(key[len(prefix) :], "big")


def history_prefix(job_id: str) -> bytes:
    """Prefix of a job's attempt-history entries (the id is length-prefixed: ids vary)."""
    encoded = job_id.encode("ascii")
    return space_prefix(Space.HISTORY) + bytes((len(encoded),)) + encoded


def history_key(job_id: str, seq: int) -> bytes:
    """Key of a job's ``seq``-th attempt-history entry (0-based, in the order written)."""
    return history_prefix(job_id) + _U64.pack(seq)


def quarantine_prefix(queue: str | None) -> bytes:
    """Prefix of one queue's quarantined records (None: records whose queue is unknown)."""
    queue_field = encode_queue(queue) if queue is not None else b"\x00"
    return space_prefix(Space.QUARANTINE) + queue_field


def quarantine_key(queue: str | None, original: bytes) -> bytes:
    """Key under which the undecodable record stored at ``original`` is kept aside."""
    return quarantine_prefix(queue) + original


def user_key(key: bytes) -> bytes:
    """Key of a caller's KV entry."""
    return b"\xff" + key


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """The fields of a job-record key."""

    space: Space
    queue: str
    job_id: str
    timestamp_ms: int | None = None
    priority: int | None = None


def _read_queue(key: bytes, offset: int) -> tuple[str, int]:
    length = key[offset]
    end = offset + 1 + length
    if end > len(key):
        raise ValueError("truncated queue name")
    return key[offset + 1 : end].decode("utf-8"), end


def parse_job_key(key: bytes) -> ParsedKey:
    """Parse a pending, claimed, scheduled, done or dead key; raise `ValueError` otherwise."""
    if len(key) < 3 or key[1] != VERSION:
        raise ValueError(f"not a job key: {key!r}")
    space = Space(key[0])
    if space in (Space.SCHEDULED, Space.DONE):
        if len(key) < 11:
            raise ValueError(f"truncated key: {key!r}")
        (stamp,) = _U64.unpack_from(key, 2)
        queue, offset = _read_queue(key, 10)
        return ParsedKey(space, queue, key[offset:].decode("ascii"), timestamp_ms=stamp)
    if space is Space.PENDING:
        queue, offset = _read_queue(key, 2)
        (priority,) = _U32.unpack_from(key, offset)
        return ParsedKey(space, queue, key[offset + 4 :].decode("ascii"), priority=priority)
    if space in (Space.CLAIMED, Space.DEAD):
        queue, offset = _read_queue(key, 2)
        return ParsedKey(space, queue, key[offset:].decode("ascii"))
    raise ValueError(f"not a job key: {key!r}")


def parse_queue_key(key: bytes) -> str:
    """The queue name of a cursor, stats or stats-delta key."""
    queue, _ = _read_queue(key, 2)
    return queue
