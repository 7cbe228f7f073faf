"""The SQLite side of the FAISS store: file names, schema, row decoding, and the checks run
before a database is opened (readable, ``quick_check``, not behind its commit record).

Opening never serves a database that lost data, and never changes one that is damaged: the
checks here read through a read-only connection and raise ``IndexDamagedError`` (message: what
is wrong, what to do). ``_admin.py`` (check, backup, restore, accept) uses them too.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from ._commits import CommitRecordError, read_record
from .base import IndexDamagedError, IndexLockedError
from .types import Item

log = logging.getLogger("server.index.store")

SCHEMA_VERSION = 1
DB_NAME = "index.sqlite3"
SNAPSHOT_NAME = "index.snapshot"
COMMITS_NAME = "index.commits"
LOCK_NAME = "index.lock"

SCHEMA = """
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    clip_id TEXT,
    start REAL,
    "end" REAL,
    metadata TEXT NOT NULL,
    modalities TEXT NOT NULL,
    has_thumbnail INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_clip ON items(clip_id);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT NOT NULL, value TEXT NOT NULL, key INTEGER NOT NULL,
    PRIMARY KEY (name, value, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_key ON tags(key);
CREATE TABLE IF NOT EXISTS thumbnails (key INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""
ITEM_COLS = (
    'key, id, clip_id, start, "end", metadata, modalities, has_thumbnail, created_at, updated_at'
)


def vt(modality: str) -> str:
    """Table of one modality's vectors (a rowid table: 3 KB blobs sit badly in WITHOUT ROWID)."""
    return f'"vec_{modality}"'


RECOVERY = (
    "Nothing was changed. To recover, stop the service and restore the latest backup "
    "(`pemt-server index restore BACKUP DATA_DIR`); docs/ARCHITECTURE.md, section 'Index: "
    "damage and recovery', lists the other options."
)


def lock_index_dir(path: Path) -> int:
    """Take the exclusive lock of an index directory; return its file descriptor (close it to
    release). Raises ``IndexLockedError`` at once when someone else holds it."""
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise IndexLockedError(
            f"{path} is in use by another process (pid {holder}) or another open VectorIndex; "
            "one process owns an index directory: stop the service first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def inspect_database(
    db_path: Path, verify: bool = True, *, full: bool = False
) -> tuple[set[str], dict[str, str], int]:
    """(tables, ``info`` rows, item count) of an existing database, through a read-only
    connection: it writes nothing, and unlike a writer it neither checkpoints nor deletes the
    WAL when it closes, so a database refused here is left exactly as it was found. ``verify``
    runs ``quick_check`` first (``full``: ``integrity_check``). Raises ``IndexDamagedError``."""
    uri = f"file:{urllib.parse.quote(str(db_path))}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout=10000")
            if verify:
                quick_check(con, db_path, full)
            tables = {str(r[0]) for r in con.execute("SELECT name FROM sqlite_master")}
            info: dict[str, str] = {}
            if "info" in tables:
                info = dict(con.execute("SELECT name, value FROM info").fetchall())
            count = 0
            if "items" in tables:
                count = int(con.execute("SELECT COUNT(*) FROM items").fetchone()[0])
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise IndexDamagedError(
            f"{db_path} is not a readable SQLite database ({exc}): it was overwritten, zeroed "
            f"or cut short. {RECOVERY}"
        ) from None
    return tables, info, count


def check_commit_record(index_dir: Path, db_uuid: str, commits: int, count: int) -> None:
    """Raise ``IndexDamagedError`` if the database (``db_uuid``, ``commits``, ``count`` items)
    is behind the commit record or is not the database the record belongs to. A missing or
    unreadable record cannot prove anything: logged, not raised."""
    path = index_dir / COMMITS_NAME
    db_path = index_dir / DB_NAME
    try:
        rec = read_record(path)
    except CommitRecordError as exc:
        log.error(
            "%s: cannot verify that no acknowledged write is missing; a new record starts at "
            "the database's %d commits",
            exc, commits,
        )  # fmt: skip
        return
    if rec is None:
        if commits:
            log.warning(
                "%s is missing: cannot verify that no acknowledged write is lost; a new record "
                "starts at the database's %d commits",
                path, commits,
            )  # fmt: skip
        return
    if rec.uuid != db_uuid:
        raise IndexDamagedError(
            f"{path} belongs to another database (uuid {rec.uuid}, {rec.commits} writes) than "
            f"{db_path} (uuid {db_uuid}): the database file was replaced. {RECOVERY} If this "
            "database is the one to serve: `pemt-server index accept DATA_DIR`."
        )
    if rec.commits > commits:
        raise IndexDamagedError(
            f"{db_path} lost acknowledged writes: it holds {count} items after {commits} "
            f"committed writes, but {rec.commits} writes ({rec.items} items after the last) "
            f"were acknowledged ({COMMITS_NAME}); the newest {rec.commits - commits} are "
            f"missing, most likely with a truncated or deleted write-ahead log ({DB_NAME}-wal). "
            f"{RECOVERY} To serve the database as it is, accepting the loss: `pemt-server index "
            "accept DATA_DIR`."
        )


def quick_check(con: sqlite3.Connection, db_path: Path, full: bool = False) -> None:
    """``PRAGMA quick_check`` (``integrity_check`` if ``full``: also compares every index with
    its table); raise ``IndexDamagedError`` naming the first problems found."""
    pragma = "integrity_check" if full else "quick_check"
    problems = [str(r[0]) for r in con.execute(f"PRAGMA {pragma}(5)")]
    if problems != ["ok"]:
        text = "; ".join(problems).replace("\n", "; ")
        raise IndexDamagedError(
            f"{db_path} failed SQLite's integrity check (PRAGMA {pragma}): {text}. {RECOVERY}"
        )


def row_item(row: tuple[Any, ...]) -> Item:
    _, item_id, clip_id, start, end, meta, mods, thumb, created, updated = row
    return Item(
        id=item_id, clip_id=clip_id, start=start, end=end, metadata=json.loads(meta),
        modalities=tuple(mods.split(",")) if mods else (), has_thumbnail=bool(thumb),
        created_at=created, updated_at=updated,
    )  # fmt: skip
