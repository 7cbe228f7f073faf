"""WebDataset tar shards of encoded videos: write (``pemt shards make``), read, inspect.

A sample is two tar members with the same key (WebDataset convention: the key is the member name
up to its first dot): ``{key}.{ext}``, the encoded file's bytes as-is (``mp4``, ``webm``, ...),
and ``{key}.json``, metadata::

    {"source": "/data/videos/dog/a.mp4", "label": "dog", "duration": 12.4, "ext": "mp4",
     "bytes": 123456, "has_audio": true, "has_video": true, "width": 640, "height": 360}

Files that fail to probe or decode are skipped and listed (printed and written to
``OUT_DIR/skipped.txt``), never silently. Shards are written with fixed member metadata (mtime 0,
no owner) so the same input gives byte-identical shards. Any WebDataset reader reads them.

Shard specs (for reading): a path, a directory (its ``*.tar``, ``*.tar.gz``, ``*.tgz``), a glob,
a brace pattern (``shard-{000000..000009}.tar``), a URL webdataset opens (``http(s)://`` through
curl, ``gs://``, ...), a ``pipe:`` command (``pipe:aws s3 cp s3://b/shard-000001.tar -``), or
several of these separated by spaces or commas. Reading is webdataset's own (``gopen``,
``tar_file_expander``, ``group_by_keys``): gzip-compressed shards work, and a sample's key is
its full member path up to the first dot of the file name, so shards written by
``webdataset.TarWriter`` with keys like ``dog/x`` and ``cat/x`` read back as two samples.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SHARD_SUFFIXES",
    "VIDEO_EXTENSIONS",
    "MakeReport",
    "expand_urls",
    "find_videos",
    "inspect_shards",
    "iter_samples",
    "make_shards",
    "read_labels_csv",
]

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv",
    ".3gp", ".ogv",
)  # fmt: skip


# --- writing --------------------------------------------------------------------------------


@dataclass
class MakeReport:
    shards: list[Path] = field(default_factory=list)
    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    total_duration: float = 0.0
    labels: Counter[str] = field(default_factory=Counter)


def find_videos(video_dir: str | Path) -> list[Path]:
    """Video files under ``video_dir`` (recursive, by extension), sorted for determinism."""
    root = Path(video_dir)
    if not root.is_dir():
        raise ValueError(f"{video_dir} is not a directory; pass the folder that holds the videos")
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
    )


def read_labels_csv(path: str | Path) -> dict[str, str]:
    """A CSV of ``path,label`` rows (an optional header row is skipped). Keys are as written:
    a path relative to the video folder, or a bare file name."""
    labels: dict[str, str] = {}
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2:
                raise ValueError(f"{path}:{i + 1}: expected 'path,label', got {row!r}")
            if i == 0 and row[0].strip().lower() in ("path", "file", "filename", "video"):
                continue
            labels[row[0].strip()] = row[1].strip()
    return labels


def _label_for(video: Path, root: Path, csv_labels: dict[str, str] | None) -> str | None:
    rel = video.relative_to(root)
    if csv_labels is not None:
        for key in (rel.as_posix(), video.name, str(video)):
            if key in csv_labels:
                return csv_labels[key]
        return None
    return rel.parent.name if rel.parent != Path(".") else None


def _check_media(path: Path, decode: bool) -> dict[str, Any]:
    """Probe (and optionally decode the first window of) ``path``; MediaError if it fails."""
    from pemt.config import MediaConfig
    from pemt.media import iter_windows, probe

    info = probe(path)
    if decode:
        # a cheap decode config: proves the streams decode without the cost of full preprocessing
        check = MediaConfig(
            fps=2, frames_per_segment=2, num_segments=4, image_size=16, sample_rate=8000,
            n_mels=8, audio_frames=16,
        )  # fmt: skip
        next(iter(iter_windows(path, check)), None)
    return {
        "duration": float(info.duration or 0.0),
        "has_audio": bool(info.has_audio),
        "has_video": bool(info.has_video),
        "width": int(info.width or 0),
        "height": int(info.height or 0),
    }


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = 0
    ti.mode = 0o644
    ti.uname = ti.gname = ""
    tar.addfile(ti, io.BytesIO(data))


def make_shards(
    video_dir: str | Path,
    out_dir: str | Path,
    *,
    labels_csv: str | Path | None = None,
    shard_size: int = 256,
    decode_check: bool = True,
    progress: bool = True,
) -> MakeReport:
    """Pack the videos under ``video_dir`` into ``out_dir/shard-NNNNNN.tar``, ``shard_size``
    samples per shard. Unreadable files go to ``out_dir/skipped.txt`` (``path<TAB>code: reason``)."""
    from tqdm import tqdm

    from pemt.media import MediaError

    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    root = Path(video_dir)
    videos = find_videos(root)
    if not videos:
        raise ValueError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {video_dir}")
    csv_labels = read_labels_csv(labels_csv) if labels_csv else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.tar"):
        old.unlink()  # a re-run must not leave stale shards from a bigger earlier run
    report = MakeReport()
    tar: tarfile.TarFile | None = None
    bar = tqdm(videos, desc="shards", unit="video", disable=not progress, file=sys.stderr)
    try:
        for video in bar:
            try:
                meta = _check_media(video, decode_check)
            except MediaError as e:
                report.skipped.append((str(video), f"{e.code}: {e}"))
                bar.write(f"skipped {video}: {e.code}: {e}", file=sys.stderr)
                continue
            except Exception as e:  # a decoder bug must not end a long packing run
                report.skipped.append((str(video), f"error: {type(e).__name__}: {e}"))
                bar.write(f"skipped {video}: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            if tar is None or report.written % shard_size == 0:
                if tar is not None:
                    tar.close()
                shard = out / f"shard-{len(report.shards):06d}.tar"
                report.shards.append(shard)
                tar = tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
            data = video.read_bytes()
            ext = video.suffix.lower().lstrip(".")
            label = _label_for(video, root, csv_labels)
            meta = {
                "source": str(video.resolve()),
                "label": label,
                "ext": ext,
                "bytes": len(data),
                **meta,
            }
            key = f"{report.written:08d}"
            _add_member(tar, f"{key}.{ext}", data)
            _add_member(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
            report.written += 1
            report.total_duration += meta["duration"]
            report.labels[label or "(none)"] += 1
    finally:
        if tar is not None:
            tar.close()
        bar.close()
    with open(out / "skipped.txt", "w") as f:
        for path, reason in report.skipped:
            f.write(f"{path}\t{reason}\n")
    return report


# --- reading --------------------------------------------------------------------------------

# the archives a directory spec picks up (webdataset reads all three)
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def _is_url(part: str) -> bool:
    """``pipe:`` or a URL scheme webdataset's ``gopen`` opens (http(s), gs, ais, hf, file, ...)."""
    from webdataset.gopen import gopen_schemes

    scheme, sep, _ = part.partition(":")
    return bool(sep) and (scheme in gopen_schemes or scheme == "file") and scheme != "__default__"


def expand_urls(spec: str | Path | list[str]) -> list[str]:
    """Shard URLs from a spec (see the module docstring). Raises ValueError if nothing matches.

    Local paths are checked (a missing file is an error now, not at read time); ``pipe:`` and
    URLs (``http://``, ``https://``, ``gs://``, ...) are brace-expanded and passed on as they
    are. A directory stands for its ``*.tar``, ``*.tar.gz`` and ``*.tgz`` files."""
    from braceexpand import braceexpand

    if isinstance(spec, list):
        parts = [str(s) for s in spec]
    else:
        s = str(spec)
        parts = [s] if s.startswith("pipe:") else s.replace(",", " ").split()
    urls: list[str] = []
    for part in parts:
        if _is_url(part):
            urls.extend(braceexpand(part))
            continue
        for item in braceexpand(part):
            p = Path(item)
            if p.is_dir():
                found = {x for suffix in SHARD_SUFFIXES for x in p.glob(f"*{suffix}")}
                urls.extend(sorted(str(x) for x in found))
            elif glob.has_magic(item):
                urls.extend(sorted(glob.glob(item)))
            elif p.is_file():
                urls.append(item)
            else:
                raise ValueError(
                    f"shard {item} does not exist; pass a path, directory, glob, {{a..b}} "
                    "pattern, URL or pipe: command"
                )
    if not urls:
        raise ValueError(f"no shards match {spec!r}")
    return urls


def _close(stream: Any, url: str) -> str | None:
    """Close a stream from webdataset's ``gopen``; for a ``pipe:`` command, end the command and
    return what went wrong with it (None if it exited cleanly or we stopped reading early)."""
    proc = getattr(stream, "proc", None)  # webdataset.gopen.Pipe
    if proc is None:
        stream.close()
        return None
    stream.stream.close()  # a writer still running gets SIGPIPE
    try:
        status = proc.wait(5.0)
    except subprocess.TimeoutExpired:  # it ignores SIGPIPE: we stopped reading, so stop it
        proc.kill()
        proc.wait()
        return None
    # 141 / -13: killed by SIGPIPE because we stopped reading before the end
    if status not in (0, 141, -13):
        return f"{url}: the command reading it exited with status {status}"
    return None


def iter_samples(url: str, errors: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Samples of one shard in order: ``{"__key__", "__url__", ext: bytes, ...}``.

    Built on webdataset's own primitives: ``gopen`` opens the URL (a path, ``pipe:CMD``,
    ``http(s)://`` through curl, ...), ``tar_file_expander`` reads the archive (plain or
    gzip-compressed) and ``group_by_keys`` groups consecutive members by their full key, the
    member path up to the first dot of its last component (``dog/x.mp4`` and ``cat/x.mp4`` are
    two samples), exactly as ``webdataset.WebDataset`` does.

    A damaged shard ends its iteration and the sample it was reading is dropped (it may be
    incomplete); the reason is appended to ``errors`` (when given) so that one bad shard does
    not stop training, otherwise ValueError is raised.
    """
    from webdataset import tariterators as wt
    from webdataset.gopen import gopen

    failures: list[str] = []

    def handler(exn: BaseException) -> bool:
        # webdataset appends " @ <stream>" to the first argument; the URL says it better
        first = exn.args[0] if exn.args and isinstance(exn.args[0], str) else str(exn)
        failures.append(f"{url}: {type(exn).__name__}: {first.split(' @ ')[0]}")
        return False  # stop reading this shard

    try:
        stream = gopen(url, "rb")
    except Exception as e:  # noqa: BLE001 - whatever the opener raises, report it per shard
        handler(e)
        stream = None
    if stream is not None:
        files = wt.tar_file_expander([{"url": url, "stream": stream}], handler=handler)
        held: dict[str, Any] | None = None  # one behind, so a failure can drop a partial sample
        try:
            for sample in wt.group_by_keys(files, handler=handler):
                if held is not None:
                    yield held
                held = sample
        finally:
            exited = _close(stream, url)
            if exited:  # a failed command explains the read error it caused
                failures.insert(0, exited)
        if held is not None and not failures:
            yield held
    if failures:
        if errors is None:
            raise ValueError(f"shard {url} is damaged or unreadable: {failures[0]}")
        errors.extend(failures[:1])


def inspect_shards(spec: str | Path | list[str]) -> dict[str, Any]:
    """Summary of shards: samples, labels, total duration, sizes, damaged shards."""
    urls = expand_urls(spec)
    labels: Counter[str] = Counter()
    exts: Counter[str] = Counter()
    count = no_audio = no_video = 0
    duration = 0.0
    media_bytes = 0
    errors: list[str] = []
    per_shard: list[dict[str, Any]] = []
    for url in urls:
        n = 0
        for sample in iter_samples(url, errors):
            meta = json.loads(sample.get("json", b"{}") or b"{}")
            n += 1
            labels[meta.get("label") or "(none)"] += 1
            duration += float(meta.get("duration") or 0.0)
            ext = meta.get("ext") or next(
                (k for k in sample if not k.startswith("__") and k != "json"), "?"
            )
            exts[ext] += 1
            media_bytes += len(sample.get(ext, b""))
            no_audio += not meta.get("has_audio", True)
            no_video += not meta.get("has_video", True)
        size = os.path.getsize(url) if not url.startswith("pipe:") and os.path.exists(url) else None
        per_shard.append({"url": url, "samples": n, "bytes": size})
        count += n
    return {
        "shards": len(urls),
        "samples": count,
        "labels": dict(sorted(labels.items())),
        "extensions": dict(sorted(exts.items())),
        "total_duration_s": round(duration, 3),
        "media_bytes": media_bytes,
        "without_audio": no_audio,
        "without_video": no_video,
        "damaged": errors,
        "per_shard": per_shard,
    }
