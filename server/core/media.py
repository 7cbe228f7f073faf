"""Kept source videos: ``data_dir/media/<clip id><suffix>``, one file per stored clip.

Nothing from the request reaches a path unchecked: the file name is the clip id (already
validated: ``[A-Za-z0-9][A-Za-z0-9._:-]*``, no ``/``) with every character outside
``[A-Za-z0-9._-]`` written as ``~xx`` (hex), and the suffix comes from ``SUFFIXES`` only (the
container sniffed from the first bytes, else the upload's file name or content type if they
name a known container, else ``.bin``).

Consistency with the index, without a second transaction log:

1. ``stage``: the already-streamed upload is renamed (same file system, no copy) to
   ``.staged-<random><suffix>`` in the media folder, while the request still holds it;
2. the windows are committed to the index;
3. ``commit``: the staged file is renamed over ``<clip><suffix>`` (atomic) and the same clip's
   files with another suffix are removed.

A kill -9 before 3 leaves a staged file (and the earlier clip's file untouched); deleting a clip
removes its rows first, then the file. ``clean`` (at start-up) removes staged files and every
file whose clip has no rows in the index, logging each as a warning. A crash leaves at most a
few such orphans (one per delete in flight); more than ``ORPHAN_LIMIT`` means the index lost
rows instead, so then ``clean`` removes none of them and logs an error. The server runs
``clean`` only on an index that opened verified and was not just created (``server/main.py``).
``lock`` serialises 2-3 and deletes, so two uploads of one id cannot end with one's windows and
the other's file.

Shared (``shared=True``: API replicas over one Milvus index, one media volume): ``lock`` also
takes an exclusive ``flock`` on ``.lock`` in the folder, so the order holds across processes,
and ``clean`` leaves staged files younger than ``STAGED_GRACE_S`` (another replica's upload in
flight). The server then cleans staged files only: checking every kept file against the index
would cost each starting replica one index query per file; a file orphaned by a crash in the
middle of a delete stays (disk space, nothing served). The volume must support ``flock`` across its clients (local disk, CephFS, NFSv4).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["CONTENT_TYPES", "ORPHAN_LIMIT", "SUFFIXES", "MediaStore", "choose_suffix", "file_name"]

log = logging.getLogger("pemt.server")

# container suffix -> Content-Type served for it (the whitelist of suffixes on disk)
CONTENT_TYPES: dict[str, str] = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".3gp": "video/3gpp",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo",
    ".mpg": "video/mpeg",
    ".ts": "video/mp2t",
    ".ogv": "video/ogg",
    ".ogg": "audio/ogg",
    ".m4a": "audio/mp4",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".bin": "application/octet-stream",
}
SUFFIXES = tuple(CONTENT_TYPES)
# a request's own words for the container, mapped onto the whitelist
_ALIASES = {".mpeg": ".mpg", ".qt": ".mov", ".mts": ".ts", ".m2ts": ".ts", ".oga": ".ogg"}
_TYPE_SUFFIX = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/3gpp": ".3gp",
    "video/webm": ".webm",
    "video/x-matroska": ".mkv",
    "application/x-matroska": ".mkv",
    "video/x-msvideo": ".avi",
    "video/avi": ".avi",
    "video/mpeg": ".mpg",
    "video/mp2t": ".ts",
    "video/ogg": ".ogv",
    "application/ogg": ".ogg",
    "audio/ogg": ".ogg",
    "audio/mp4": ".m4a",
    "application/mp4": ".mp4",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/flac": ".flac",
}
_STAGED = ".staged-"
# more orphans than this at start-up are a lost index, not a crash: keep them all
ORPHAN_LIMIT = 32
# shared folder: a staged file younger than this may be another replica's upload in flight
STAGED_GRACE_S = 3600.0
_SAFE = re.compile(r"[A-Za-z0-9._-]")


def file_name(clip_id: str) -> str:
    """The clip id as a file name (no suffix); one-to-one, ``~`` never occurs in an id."""
    return "".join(c if _SAFE.fullmatch(c) else f"~{ord(c):02x}" for c in clip_id)


def _clip_id(name: str) -> str | None:
    """Inverse of ``file_name``; None for a name ``file_name`` does not produce."""
    try:
        out = re.sub(r"~([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), name)
    except ValueError:
        return None
    return out if out and file_name(out) == name else None


def _sniff(head: bytes) -> str | None:
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return ".mov"
        if brand in (b"M4A ", b"M4B "):
            return ".m4a"
        if brand.startswith(b"3g"):
            return ".3gp"
        return ".mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return ".webm" if b"webm" in head[:64] else ".mkv"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return ".avi"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return ".wav"
    if head.startswith(b"OggS"):
        return ".ogv" if b"theora" in head[:128] else ".ogg"
    if head.startswith(b"fLaC"):
        return ".flac"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return ".mp3"
    if head.startswith(b"\x00\x00\x01\xba"):
        return ".mpg"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return ".ts"
    return None


def choose_suffix(path: Path, filename: str | None, content_type: str | None) -> str:
    """A suffix from ``SUFFIXES`` for the upload at ``path``: what its first bytes say, else
    its file name's suffix or content type if either names a known container, else ``.bin``."""
    with open(path, "rb") as f:
        sniffed = _sniff(f.read(256))
    if sniffed:
        return sniffed
    if filename:
        suffix = os.path.splitext(filename)[1].lower()
        suffix = _ALIASES.get(suffix, suffix)
        if suffix in CONTENT_TYPES:
            return suffix
    return _TYPE_SUFFIX.get((content_type or "").lower(), ".bin")


class _FolderLock:
    """A re-entrant thread lock that also holds ``flock`` on a file while held (shared folder)."""

    def __init__(self, path: Path | None) -> None:
        self._rlock = threading.RLock()
        self._path = path
        self._fd = -1
        self._depth = 0

    def __enter__(self) -> _FolderLock:
        self._rlock.acquire()
        if self._depth == 0 and self._path is not None:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
                self._rlock.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd >= 0:
            os.close(self._fd)  # releases the flock
            self._fd = -1
        self._rlock.release()


class MediaStore:
    """The media folder; all methods are blocking (call them off the event loop).
    ``shared``: other processes use the folder too (see the module docstring)."""

    def __init__(self, root: Path, *, shared: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shared = shared
        self.lock = _FolderLock(self.root / ".lock" if shared else None)

    def _candidates(self, clip_id: str) -> list[Path]:
        base = file_name(clip_id)
        return [self.root / (base + s) for s in SUFFIXES]

    def path(self, clip_id: str) -> Path | None:
        """The kept file of a clip, or None."""
        for p in self._candidates(clip_id):
            if p.is_file():
                return p
        return None

    @staticmethod
    def content_type(path: Path) -> str:
        return CONTENT_TYPES.get(path.suffix, "application/octet-stream")

    def stage(self, upload: Path, suffix: str) -> Path:
        """Move the streamed upload into the media folder under a staging name."""
        if suffix not in CONTENT_TYPES:
            raise ValueError(f"suffix {suffix!r} is not one of {', '.join(SUFFIXES)}")
        staged = self.root / f"{_STAGED}{uuid.uuid4().hex}{suffix}"
        os.replace(upload, staged)
        return staged

    def commit(self, staged: Path, clip_id: str) -> Path:
        """The staged file becomes the clip's file (atomic rename); other suffixes go."""
        final = self.root / (file_name(clip_id) + staged.suffix)
        with self.lock:
            os.replace(staged, final)
            for p in self._candidates(clip_id):
                if p != final:
                    p.unlink(missing_ok=True)
        return final

    def discard(self, staged: Path | None) -> None:
        if staged is not None:
            with contextlib.suppress(OSError):
                staged.unlink()

    def remove(self, clip_id: str) -> bool:
        """Delete a clip's file; True if there was one."""
        found = False
        with self.lock:
            for p in self._candidates(clip_id):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    found = True
        return found

    def kept(self) -> list[tuple[Path, str]]:
        """(file, clip id) of every kept file: committed, with a name this store writes."""
        out = []
        for p in sorted(self.root.iterdir()):
            if p.is_file() and not p.name.startswith(_STAGED) and p.suffix in CONTENT_TYPES:
                clip = _clip_id(p.stem)
                if clip is not None:
                    out.append((p, clip))
        return out

    def clean(self, has_rows: Callable[[str], bool] | None, max_orphans: int = ORPHAN_LIMIT) -> int:
        """Remove staged files and files whose clip has no rows (left by a crash); return how
        many went, each logged. More than ``max_orphans`` orphans: remove none of them (the
        index lost rows; see the module docstring). Names this store does not write are left
        alone (and logged)."""
        removed = 0
        with self.lock:
            kept = {p for p, _ in self.kept()}
            for p in sorted(self.root.iterdir()):
                if p.name == ".lock":
                    continue
                if p.is_file() and p.name.startswith(_STAGED):
                    if self.shared and time.time() - p.stat().st_mtime < STAGED_GRACE_S:
                        continue  # maybe another replica's upload, still in flight
                    log.warning("media folder: removing %s (an upload that never committed)", p)
                    p.unlink(missing_ok=True)
                    removed += 1
                elif p.is_file() and p not in kept:
                    log.warning("media folder: leaving %s alone (not a name this server writes)", p)
            if has_rows is None:  # staged files only
                return removed
            orphans = [(p, clip) for p, clip in self.kept() if not has_rows(clip)]
            if len(orphans) > max_orphans:
                log.error(
                    "media folder: %d of %d kept files belong to clips the index does not hold; "
                    "that many means the index lost rows, not a crash, so none was removed. "
                    "Restore the index from a backup, or remove the files yourself: %s ...",
                    len(orphans), len(kept), ", ".join(p.name for p, _ in orphans[:5]),
                )  # fmt: skip
                return removed
            for p, clip in orphans:
                log.warning(
                    "media folder: removing %s (%d bytes): clip %r has no rows in the index "
                    "(a crash between deleting its rows and its file)",
                    p, p.stat().st_size, clip,
                )  # fmt: skip
                p.unlink(missing_ok=True)
                removed += 1
        return removed
