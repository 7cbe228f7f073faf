"""The commit record (``index.commits``): how many writes the index has acknowledged, kept
outside the SQLite file, so that a database that lost acknowledged transactions is refused at
open instead of served.

Why. SQLite keeps committed transactions in the WAL until a checkpoint copies them into the
database file. A WAL that is truncated, zeroed or deleted after a crash (a damaged disk, a
careless copy) silently takes the newest commits with it: the database opens fine, with fewer
rows. Nothing inside the SQLite file can tell, so the count lives next to it.

Contract. Every write transaction that changes rows also increments ``info.commits`` in the
same transaction. After COMMIT returns and before the write is acknowledged (``upsert`` and
``delete`` return), the new count is written here, with ``fdatasync`` under
``synchronous=FULL``. So after any crash the database's count is >= the recorded one: it can be
ahead by commits whose record was not written yet (never acknowledged), never behind. A
database behind its record has lost acknowledged writes.

Layout: two 512-byte slots, one per disk sector, so that a write torn by power loss damages at
most one; commit n goes to slot n % 2. A slot is ``magic | database uuid (16 bytes) | commits
(u64) | items (u64) | crc32``. Reading takes the valid slot with the higher count; if the newest
slot was torn, the other is one commit older, which is still <= the database.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from ._snapshot import fsync_dir

MAGIC = b"PEMTCMT1"
_SLOT = 512
_BODY = struct.Struct("<8s16sQQ")
_CRC = struct.Struct("<I")


class CommitRecordError(ValueError):
    """The commit record exists but no slot in it is readable."""


@dataclass(frozen=True)
class Recorded:
    """What the record says: the database it belongs to, acknowledged commits and items."""

    uuid: str
    commits: int
    items: int


def _pack(uuid: str, commits: int, items: int) -> bytes:
    body = _BODY.pack(MAGIC, bytes.fromhex(uuid), commits, items)
    return (body + _CRC.pack(zlib.crc32(body))).ljust(_SLOT, b"\0")


def _unpack(slot: bytes) -> Recorded | None:
    size = _BODY.size + _CRC.size
    if len(slot) < size:
        return None
    body, (crc,) = slot[: _BODY.size], _CRC.unpack(slot[_BODY.size : size])
    if zlib.crc32(body) != crc:
        return None
    magic, uuid, commits, items = _BODY.unpack(body)
    return Recorded(uuid.hex(), commits, items) if magic == MAGIC else None


def read_record(path: Path) -> Recorded | None:
    """The newest valid slot of the record at ``path``; None if there is no file.

    Raises ``CommitRecordError`` when the file exists but neither slot is valid.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    slots = [s for s in (_unpack(data[:_SLOT]), _unpack(data[_SLOT : 2 * _SLOT])) if s]
    if not slots:
        raise CommitRecordError(f"{path} has no readable slot ({len(data)} bytes)")
    return max(slots, key=lambda s: s.commits)


class CommitRecord:
    """The open record of one database; ``write`` is called once per acknowledged commit."""

    def __init__(self, path: Path, uuid: str, *, sync: bool = True) -> None:
        self.path = Path(path)
        self.uuid = uuid
        self.sync = sync
        existed = self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not existed:
            fsync_dir(self.path.parent)

    def write(self, commits: int, items: int) -> None:
        """Record ``commits`` (and the item count after it); durable when it returns if ``sync``."""
        os.pwrite(self._fd, _pack(self.uuid, commits, items), (commits % 2) * _SLOT)
        if self.sync:
            os.fdatasync(self._fd)

    def reset(self, commits: int, items: int) -> None:
        """Make both slots say ``commits`` (a new record, or one accepted after a loss)."""
        slot = _pack(self.uuid, commits, items)
        os.pwrite(self._fd, slot + slot, 0)
        os.ftruncate(self._fd, 2 * _SLOT)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
