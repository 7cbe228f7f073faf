"""Operator tools for one index directory: check, online backup, restore, accept.

``pemt-server index ...`` (``server/cli.py``) wraps these for a service's data directory and
adds the kept media (``server/core/backup.py``).

- ``check_index``: what opening would find, read-only (``quick_check`` or the full
  ``integrity_check``, the commit record), as a report; safe while the service runs.
- ``backup_index``: a consistent copy while the service keeps writing. The FAISS snapshot is
  copied first (from an open file handle, so a concurrent snapshot rename does not matter), then
  the database through SQLite's online backup API in one step: one read transaction, so the copy
  is exactly the database as of one commit, and writers are not blocked (WAL). The copy is
  switched to a rollback journal (one self-contained file), checked with ``quick_check``, and
  described with its sha256 in ``backup.json``. Every write acknowledged before the backup
  started is in it; writes acknowledged while it ran may be.
- ``restore_index``: verifies the backup (hashes, ``quick_check``, what ``backup.json`` says),
  builds the new directory beside the old one with a commit record matching the restored
  database, then swaps it in; the old directory is kept as ``<name>.before-restore-<time>``,
  never deleted. Refuses while the service has the index open (its lock).
- ``accept_index``: after a detected loss that will not be restored, records the database's
  own commit count as the acknowledged one, so that it opens again (it must pass
  ``quick_check``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import IO, Any

from ._commits import CommitRecord, CommitRecordError, read_record
from ._snapshot import fsync_dir
from .store import (
    COMMITS_NAME,
    DB_NAME,
    LOCK_NAME,
    SNAPSHOT_NAME,
    IndexDamagedError,
    check_commit_record,
    inspect_database,
    lock_index_dir,
)

__all__ = ["MANIFEST", "accept_index", "backup_index", "check_index", "restore_index"]

MANIFEST = "backup.json"
FORMAT = "pemt-index-backup/1"
_BLOCK = 1 << 20


def copy_file(src: IO[bytes], dest: Path) -> dict[str, Any]:
    """Copy an open file to ``dest`` (fsynced); return its size and sha256."""
    sha = hashlib.sha256()
    size = 0
    with open(dest, "wb") as out:
        while block := src.read(_BLOCK):
            out.write(block)
            sha.update(block)
            size += len(block)
        out.flush()
        os.fsync(out.fileno())
    return {"bytes": size, "sha256": sha.hexdigest()}


def file_digest(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            sha.update(block)
    return {"bytes": path.stat().st_size, "sha256": sha.hexdigest()}


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def check_index(path: Path, *, full: bool = False) -> dict[str, Any]:
    """Report on the index at ``path`` without changing it: ``ok`` and, if not, ``problem``
    (what opening would say), plus items, commits and what the commit record holds."""
    path = Path(path)
    db = path / DB_NAME
    report: dict[str, Any] = {"index": str(path), "ok": False, "problem": None}
    if not db.is_file() or db.stat().st_size == 0:
        report["problem"] = f"{db} is missing or empty"
        return report
    try:
        _, info, count = inspect_database(db, True, full=full)
        if not info:
            raise IndexDamagedError(f"{db} holds no index settings (table 'info')")
        commits = int(info.get("commits", 0))
        report.update(items=count, commits=commits, uuid=info["uuid"], dim=int(info["dim"]))
        try:
            rec = read_record(path / COMMITS_NAME)
            report["recorded_commits"] = None if rec is None else rec.commits
        except CommitRecordError:
            report["recorded_commits"] = "unreadable"
        check_commit_record(path, info["uuid"], commits, count)
    except IndexDamagedError as exc:
        report["problem"] = str(exc)
        return report
    report["ok"] = True
    return report


def backup_index(path: Path, out: Path) -> dict[str, Any]:
    """Back up the index at ``path`` into the new or empty folder ``out`` (see the module
    docstring); safe while the service writes. Returns the manifest (also ``out/backup.json``)."""
    path, out = Path(path), Path(out)
    src_db = path / DB_NAME
    if not src_db.is_file() or src_db.stat().st_size == 0:
        raise FileNotFoundError(f"{src_db} does not exist or is empty: nothing to back up")
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; back up into a new folder")
    files: dict[str, dict[str, Any]] = {}
    try:  # first the snapshot, so that it is never newer than the database copy
        with open(path / SNAPSHOT_NAME, "rb") as f:
            files[SNAPSHOT_NAME] = copy_file(f, out / SNAPSHOT_NAME)
    except FileNotFoundError:
        pass
    partial = out / (DB_NAME + ".partial")
    src = sqlite3.connect(f"file:{urllib.parse.quote(str(src_db))}?mode=ro", uri=True)
    dst = sqlite3.connect(partial, isolation_level=None)
    try:
        src.execute("PRAGMA busy_timeout=10000")
        src.backup(dst)  # all pages in one step: one read transaction, one consistent state
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        dst.close()
        src.close()
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    _, info, count = inspect_database(partial, True)
    if not info:
        raise IndexDamagedError(f"{src_db} holds no index settings; nothing was backed up")
    os.replace(partial, out / DB_NAME)
    files[DB_NAME] = file_digest(out / DB_NAME)
    manifest = {
        "format": FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": str(path.resolve()),
        "uuid": info["uuid"],
        "commits": int(info.get("commits", 0)),
        "items": count,
        "dim": int(info["dim"]),
        "modalities": json.loads(info["modalities"]),
        "files": files,
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def write_json(dest: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``dest`` atomically and durably."""
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def read_manifest(folder: Path, fmt: str, what: str) -> dict[str, Any]:
    """The ``MANIFEST`` of a backup folder, refused (``ValueError``) when it is missing,
    unreadable or of another format than ``fmt``; ``what`` names the kind of backup."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder} is not {what} ({MANIFEST}: {exc})") from None
    if manifest.get("format") != fmt:
        raise ValueError(f"{folder / MANIFEST} has format {manifest.get('format')!r}, not {fmt}")
    return dict(manifest)


def read_backup(backup: Path) -> dict[str, Any]:
    """The manifest of the index backup in ``backup``, after checking every file against it
    and the database with ``quick_check``; raises ``ValueError`` saying what does not match."""
    backup = Path(backup)
    manifest = read_manifest(backup, FORMAT, "an index backup")
    for name, want in manifest["files"].items():
        if name not in (DB_NAME, SNAPSHOT_NAME):
            raise ValueError(f"{backup / MANIFEST} lists an unexpected file {name!r}")
        try:
            got = file_digest(backup / name)
        except FileNotFoundError:
            raise ValueError(f"the backup lacks {backup / name}") from None
        if got != want:
            raise ValueError(f"{backup / name} does not match {MANIFEST} (damaged or altered)")
    if DB_NAME not in manifest["files"]:
        raise ValueError(f"{backup / MANIFEST} lists no {DB_NAME}")
    try:
        _, info, count = inspect_database(backup / DB_NAME, True)
    except IndexDamagedError as exc:
        raise ValueError(f"the backup's database is damaged: {exc}") from None
    got_state = (info.get("uuid"), int(info.get("commits", 0)), count)
    if got_state != (manifest["uuid"], manifest["commits"], manifest["items"]):
        raise ValueError(f"{backup / DB_NAME} does not hold what {MANIFEST} says")
    return dict(manifest)


def restore_index(backup: Path, path: Path, *, lock: bool = True) -> dict[str, Any]:
    """Replace the index at ``path`` with the backup in ``backup`` (see the module docstring).

    ``lock=False`` when the caller already holds the index lock. Returns the manifest plus
    ``previous``: where the replaced directory was moved (None if there was none).
    """
    backup, path = Path(backup), Path(path)
    manifest = read_backup(backup)
    stage = path.with_name(f".{path.name}.restoring-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    lock_fd = -1
    try:
        for name in manifest["files"]:
            with open(backup / name, "rb") as f:
                copy_file(f, stage / name)
        record = CommitRecord(stage / COMMITS_NAME, manifest["uuid"])
        try:
            record.reset(manifest["commits"], manifest["items"])
        finally:
            record.close()
        fsync_dir(stage)
        if lock and path.is_dir():
            lock_fd = lock_index_dir(path)
        previous = None
        if path.is_dir():
            if any(p.name != LOCK_NAME for p in path.iterdir()):
                previous = path.with_name(f"{path.name}.before-restore-{_stamp()}")
                os.replace(path, previous)
            else:
                shutil.rmtree(path)
        os.replace(stage, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)
    return {**manifest, "previous": None if previous is None else str(previous)}


def accept_index(path: Path) -> dict[str, Any]:
    """Record the database's own commit count as the acknowledged one (the loss the record
    reported is accepted); returns the counts before and after. Refuses a database that fails
    ``quick_check`` (restore that one) and runs only while no one has the index open."""
    path = Path(path)
    lock_fd = lock_index_dir(path)
    try:
        db = path / DB_NAME
        if not db.is_file() or db.stat().st_size == 0:
            raise IndexDamagedError(f"{db} is missing or empty: there is nothing to accept")
        _, info, count = inspect_database(db, True)
        if not info:
            raise IndexDamagedError(f"{db} holds no index settings: there is nothing to accept")
        commits = int(info.get("commits", 0))
        try:
            old = read_record(path / COMMITS_NAME)
        except CommitRecordError:
            old = None
        record = CommitRecord(path / COMMITS_NAME, info["uuid"])
        try:
            record.reset(commits, count)
        finally:
            record.close()
    finally:
        os.close(lock_fd)
    return {
        "index": str(path),
        "items": count,
        "commits": commits,
        "recorded_commits_before": None if old is None else old.commits,
        "recorded_items_before": None if old is None else old.items,
    }
