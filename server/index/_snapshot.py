"""Atomic FAISS snapshot file: a cache of the in-memory indexes, never the source of truth.

Layout: ``MAGIC | section bytes ... | footer JSON | u64 footer length | sha256 (32 bytes)``.
Sections are ``faiss.write_index`` output streamed straight to the file (no second in-memory
copy); the footer holds their offsets and lengths plus what the snapshot covers (the SQLite
sequence number, the index configuration). The digest covers every byte before it.

Written to ``<name>.tmp-<pid>``, fsynced, renamed over ``<name>``, then the directory is
fsynced: a crash leaves either the old complete file or the new complete file (plus maybe a
stray temp file, removed on the next open). A file that fails any check is ignored and the
index is rebuilt from SQLite.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

faiss: Any = _faiss  # its type stubs lack PyCallbackIOWriter
MAGIC = b"PEMTSNP1"
_TAIL = struct.Struct("<Q32s")  # footer length, sha256
_MAX_FOOTER = 1 << 20


class SnapshotError(ValueError):
    """The snapshot file is missing, partial, corrupt or from another configuration."""


class _HashingFile:
    def __init__(self, f: Any) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.pos = 0

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.sha.update(data)
        self.pos += len(data)
        return len(data)


def fsync_dir(path: Path) -> None:
    """fsync a directory: makes the renames and creations in it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(path: Path, indexes: Mapping[str, Any], header: dict[str, Any]) -> int:
    """Write ``indexes`` (name -> faiss index) and ``header`` atomically; return bytes written."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            out = _HashingFile(f)
            out.write(MAGIC)
            sections = {}
            for name, index in indexes.items():
                start = out.pos
                faiss.write_index(index, faiss.PyCallbackIOWriter(out.write))
                sections[name] = [start, out.pos - start]
            footer = json.dumps({**header, "sections": sections}).encode()
            out.write(footer)
            out.write(struct.pack("<Q", len(footer)))
            f.write(out.sha.digest())
            f.flush()
            os.fsync(f.fileno())
            size = out.pos + 32
        os.replace(tmp, path)
        fsync_dir(path.parent)
        return size
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_snapshot(
    path: Path, expect: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (header, name -> faiss index); raise ``SnapshotError`` on any defect.

    The footer is checked against ``expect`` first (cheap: a few KB from the end), then the
    whole file is read once, its digest verified, and only then handed to FAISS.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise SnapshotError("no snapshot file") from exc
    if size < len(MAGIC) + _TAIL.size:
        raise SnapshotError(f"snapshot is truncated ({size} bytes)")
    body_end = size - 32
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise SnapshotError("snapshot has a wrong magic number")
        f.seek(size - _TAIL.size)
        footer_len, digest = _TAIL.unpack(f.read(_TAIL.size))
        if footer_len > min(body_end - 8 - len(MAGIC), _MAX_FOOTER):
            raise SnapshotError("snapshot footer length is out of range")
        f.seek(body_end - 8 - footer_len)
        try:
            header = json.loads(f.read(footer_len))
            sections = header.pop("sections")
        except (ValueError, KeyError, AttributeError) as exc:
            raise SnapshotError(f"snapshot footer is unreadable: {exc}") from exc
        for key, value in (expect or {}).items():
            if header.get(key) != value:
                raise SnapshotError(f"snapshot has {key}={header.get(key)!r}, expected {value!r}")
        f.seek(0)
        data = f.read(body_end)  # one read of the whole file: hashed, then parsed
    if len(data) != body_end or hashlib.sha256(data).digest() != digest:
        raise SnapshotError("snapshot checksum does not match")
    indexes = {}
    try:
        for name, (start, length) in sections.items():
            if not 0 < start <= start + length <= body_end:
                raise SnapshotError(f"snapshot section {name!r} is out of range")
            buf = np.frombuffer(data, dtype=np.uint8, count=length, offset=start)
            indexes[name] = faiss.deserialize_index(buf)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise SnapshotError(f"snapshot section is unreadable: {exc}") from exc
    return header, indexes


def remove_stray_temps(path: Path) -> None:
    """Delete temp files a crashed writer left next to ``path``."""
    for stray in path.parent.glob(f"{path.name}.tmp-*"):
        stray.unlink(missing_ok=True)
