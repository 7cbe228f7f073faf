"""Backup, restore and accept for a service's data directory: the index plus the kept media.

A backup folder ``OUT``::

    OUT/backup.json   what it holds: the index's uuid, commits and items; each media file's
                      size and sha256
    OUT/index/        the index backup (server.index.backup_index: index.sqlite3, the FAISS
                      snapshot if there was one, its own backup.json)
    OUT/media/        the kept videos of the clips in that index (unless media=False)

``backup_data_dir`` is safe while the service runs: the index copy is one consistent state
(SQLite's online backup API), and then the media of exactly the clips in that copy are copied,
each from one open file handle. A clip deleted meanwhile has no file in the backup (counted in
``media_missing``); a clip re-uploaded meanwhile carries its newer file.

``restore_data_dir`` needs the service stopped (it takes the index's lock). It checks the whole
backup first (hashes, ``quick_check``), copies the media into a staging folder beside the media
folder and checks their hashes, and only then changes the data directory. Nothing is deleted:
the replaced index goes to ``index.before-restore-<time>/``, and every kept file the restored
index does not describe, or that a file from the backup replaces, to
``media.before-restore-<time>/`` (otherwise start-up would count them as orphans).

``accept_data_dir`` (service stopped) accepts a detected loss (``server.index.accept_index``)
and moves the kept videos of the clips the index lost to ``media.before-accept-<time>/``:
they are what it takes to upload those clips again, so start-up must not delete them as
orphans.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.core.media import MediaStore, file_name
from server.index._admin import (
    MANIFEST,
    accept_index,
    backup_index,
    copy_file,
    read_backup,
    read_manifest,
    restore_index,
    write_json,
)
from server.index._snapshot import fsync_dir
from server.index.store import DB_NAME, lock_index_dir

__all__ = ["accept_data_dir", "backup_data_dir", "restore_data_dir"]

FORMAT = "pemt-data-backup/1"


def _clips(db: Path) -> set[str]:
    """Clip ids of the items in an index database (an item without a clip is its own clip)."""
    con = sqlite3.connect(f"file:{urllib.parse.quote(str(db))}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT DISTINCT COALESCE(clip_id, id) FROM items").fetchall()
    finally:
        con.close()
    return {str(r[0]) for r in rows}


def _move_aside(store: MediaStore, move: Callable[[str], bool], aside: Path) -> int:
    """Move every kept file whose clip ``move`` picks into ``aside``; return how many."""
    moved = 0
    for path, clip in store.kept():
        if move(clip):
            aside.mkdir(exist_ok=True)
            os.replace(path, aside / path.name)
            moved += 1
    if moved:
        fsync_dir(aside)
        fsync_dir(store.root)
    return moved


def backup_data_dir(data_dir: Path, out: Path, *, media: bool = True) -> dict[str, Any]:
    """Back up ``data_dir`` (index, and kept media if ``media``) into the new folder ``out``."""
    data_dir, out = Path(data_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; back up into a new folder")
    index = backup_index(data_dir / "index", out / "index")
    files: dict[str, dict[str, Any]] = {}
    missing = 0
    if media:
        (out / "media").mkdir()
        store = MediaStore(data_dir / "media")
        for clip in sorted(_clips(out / "index" / DB_NAME)):
            src = store.path(clip)
            try:
                if src is None:
                    raise FileNotFoundError(clip)
                with open(src, "rb") as f:
                    files[src.name] = copy_file(f, out / "media" / src.name)
            except FileNotFoundError:  # never kept, or deleted since the index copy
                missing += 1
    manifest = {
        "format": FORMAT,
        "created_at": index["created_at"],
        "data_dir": str(data_dir.resolve()),
        "index": {k: index[k] for k in ("uuid", "commits", "items")},
        "media": files,
        "media_missing": missing if media else None,
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def restore_data_dir(backup: Path, data_dir: Path, *, media: bool = True) -> dict[str, Any]:
    """Restore the backup in ``backup`` into ``data_dir`` (see the module docstring); with
    ``media=False`` the backup's media files are not copied (the live ones stay)."""
    backup, data_dir = Path(backup), Path(data_dir)
    manifest = read_manifest(backup, FORMAT, "a data directory backup")
    read_backup(backup / "index")  # all of it checked before anything changes
    clips = _clips(backup / "index" / DB_NAME)
    index_dir = data_dir / "index"
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = lock_index_dir(index_dir) if index_dir.is_dir() else -1
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    stage = data_dir / f".media.restoring-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        incoming: dict[str, Path] = {}
        if media:
            stage.mkdir()
            for name, want in manifest["media"].items():
                if name != Path(name).name or name.startswith("."):
                    raise ValueError(f"{backup / MANIFEST} names a media file {name!r}")
                with open(backup / "media" / name, "rb") as f:
                    got = copy_file(f, stage / name)
                if got != want:
                    raise ValueError(f"{backup / 'media' / name} does not match {MANIFEST}")
                incoming[name] = stage / name
        store = MediaStore(data_dir / "media")
        replaced = {Path(n).stem for n in incoming}
        aside = data_dir / f"media.before-restore-{stamp}"
        moved = _move_aside(
            store, lambda clip: clip not in clips or file_name(clip) in replaced, aside
        )
        for name, path in incoming.items():
            os.replace(path, store.root / name)
        fsync_dir(store.root)
        result = restore_index(backup / "index", index_dir, lock=False)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if lock_fd >= 0:
            os.close(lock_fd)
    return {
        "index": {k: result[k] for k in ("uuid", "commits", "items", "created_at")},
        "previous_index": result["previous"],
        "media_restored": len(incoming),
        "media_moved_aside": moved,
        "media_aside": str(aside) if moved else None,
    }


def accept_data_dir(data_dir: Path) -> dict[str, Any]:
    """Serve the index as it is after a detected loss (see the module docstring)."""
    data_dir = Path(data_dir)
    result = accept_index(data_dir / "index")
    clips = _clips(data_dir / "index" / DB_NAME)
    aside = data_dir / f"media.before-accept-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    moved = _move_aside(MediaStore(data_dir / "media"), lambda clip: clip not in clips, aside)
    return {**result, "media_moved_aside": moved, "media_aside": str(aside) if moved else None}
