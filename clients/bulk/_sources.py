"""What to index (a folder, a glob or a manifest) and what was indexed (the results file).

A manifest is JSON Lines (``{"path": ..., "id": ..., "metadata": {...}}`` per line) or CSV
(columns ``path``, optional ``id``, optional ``metadata`` as JSON text; other columns become
metadata). Relative paths are relative to the manifest's folder. Without an id, a file's clip
id is its path relative to the source folder with ``/`` as ``:`` and other characters outside
the id alphabet as ``_`` (ids longer than 128 characters end in a hash), so the same library
always gets the same ids and a second run replaces rather than duplicates.

The results file is JSON Lines, one line per finished file (``status`` ``ok`` or ``error``, the
id, windows, error code and message, the file's size and mtime), appended and fsynced as each
file ends: a run that stops loses at most the files in flight, and the next run skips every
file listed with the same size, mtime and id (errors too, unless ``retry_failed``).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Entry", "Results", "clip_id_for", "read_source"]

VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ts", ".ogv", ".3gp",
    ".m4a", ".mp3", ".wav", ".ogg", ".flac",
}  # fmt: skip
_ID_CHAR = re.compile(r"[^A-Za-z0-9._:-]")


@dataclass(frozen=True)
class Entry:
    path: str  # absolute
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        st = os.stat(self.path)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def clip_id_for(rel: str) -> str:
    """A valid clip id for a file at relative path ``rel`` (see the module docstring)."""
    text = _ID_CHAR.sub("_", rel.replace(os.sep, ":").replace("/", ":")).lstrip("._:-") or "clip"
    if len(text) > 128:
        digest = hashlib.sha256(rel.encode()).hexdigest()[:16]
        text = text[: 128 - 17].rstrip("._:-") + "-" + digest
    return text


def _from_folder(root: Path, files: Iterable[Path]) -> list[Entry]:
    return [
        Entry(str(p.resolve()), clip_id_for(str(p.relative_to(root))))
        for p in sorted(files)
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
    ]


def _manifest(path: Path) -> list[Entry]:
    base = path.parent
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                meta = json.loads(row.pop("metadata") or "{}") if row.get("metadata") else {}
                row.pop("metadata", None)
                extra = {k: v for k, v in row.items() if k not in ("path", "id") and v != ""}
                rows.append(
                    {"path": row.get("path"), "id": row.get("id"), "metadata": {**extra, **meta}}
                )
    else:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not a JSON object ({e.msg})") from None
    out = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("path"):
            raise ValueError(f"{path}: entry {n} has no 'path'; each entry needs one")
        p = Path(row["path"])
        p = p if p.is_absolute() else base / p
        meta = row.get("metadata") or {}
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: entry {n}: metadata must be a JSON object")
        ident = row.get("id") or clip_id_for(os.path.relpath(p, base))
        out.append(Entry(str(p.resolve()), str(ident), meta))
    return out


def read_source(source: str) -> list[Entry]:
    """Entries of a folder (recursively, video and audio suffixes), a glob (quote it) or a
    manifest (``.jsonl``/``.json``/``.csv``); ValueError when it names nothing."""
    p = Path(source)
    if p.is_dir():
        entries = _from_folder(p, p.rglob("*"))
    elif p.is_file() and p.suffix.lower() in (".jsonl", ".json", ".csv"):
        entries = _manifest(p)
    elif any(c in source for c in "*?["):
        matches = [Path(m) for m in glob.glob(source, recursive=True)]
        root = Path(os.path.commonpath([str(m.parent) for m in matches])) if matches else Path(".")
        entries = _from_folder(root, matches)
    else:
        raise ValueError(
            f"{source!r} is not a folder, a glob or a manifest (.jsonl / .csv); name one of those"
        )
    ids: dict[str, str] = {}
    for e in entries:
        if e.id in ids and ids[e.id] != e.path:
            raise ValueError(
                f"two files get clip id {e.id!r} ({ids[e.id]} and {e.path}); give them ids in a "
                "manifest"
            )
        ids[e.id] = e.path
    return entries


class Results:
    """The results file (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lines: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
                self.lines[rec["path"]] = rec

    def done(self, e: Entry, retry_failed: bool = False) -> bool:
        rec = self.lines.get(e.path)
        if rec is None or rec.get("id") != e.id:
            return False
        try:
            if {k: rec.get(k) for k in ("size", "mtime_ns")} != e.fingerprint():
                return False
        except OSError:
            return rec.get("status") == "error" and not retry_failed  # still missing
        return rec.get("status") == "ok" or not retry_failed

    def record(self, e: Entry, status: str, **info: Any) -> dict[str, Any]:
        try:
            fp = e.fingerprint()
        except OSError:
            fp = {"size": None, "mtime_ns": None}
        rec = {"path": e.path, "id": e.id, "status": status, **fp, **info, "at": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.lines[e.path] = rec
        return rec
