"""What the real service does at start-up with each kind of index damage (the table in
bench/results/reliability_b.md): one line per case with the exit status or the item count, the
kept videos before -> after, whether the log holds a traceback, and its first relevant line.

A data directory is made once with a real server (the tiny model exported by
export/build_engine.py, 2-s H.264/AAC uploads, kept media): ``base`` (8 uploads, stopped
cleanly: everything checkpointed into index.sqlite3) and ``crashed`` (12 more, then kill -9:
those 12 are in the WAL). Each case damages a copy and starts a server on it.

Run it against any checkout (``PYTHONPATH=<checkout>``) to compare before/after:

    PYTHONPATH=$PWD .venv/bin/python bench/corruption_cases.py --workdir /tmp/cases
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx

from pemt.media.encode import make_test_video
from server.testing import ServerProcess, build_test_repository


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True, help="emptied, then used")
    ap.add_argument("--repo", type=Path, default=None, help="model repository (default: build)")
    args = ap.parse_args()
    w: Path = args.workdir
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    repo = args.repo or build_test_repository(w / "model" / "repo")
    clip = make_test_video(w / "c.mp4", seconds=2, width=64, height=48)

    def env(d: Path) -> dict[str, str]:
        return {"PEMT_MODEL_PATH": str(repo), "PEMT_DATA_DIR": str(d), "PEMT_DECODE_WORKERS": "1"}

    def embed(url: str, i: int) -> None:
        r = httpx.post(
            url + "/embed",
            files={"file": ("c.mp4", clip.read_bytes(), "video/mp4")},
            data={"id": f"k{i}"},
            timeout=60,
        )
        r.raise_for_status()

    base = w / "base"
    with ServerProcess(env(base), log_path=w / "base.log") as srv:
        for i in range(8):
            embed(srv.url, i)
    crashed = w / "crashed"
    shutil.copytree(base, crashed)
    srv = ServerProcess(env(crashed), log_path=w / "crashed.log").start()
    for i in range(8, 20):
        embed(srv.url, i)
    srv.kill9()

    def items_root(db: Path) -> int:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        (root,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name='items'").fetchone()
        con.close()
        return int(root)

    def bad_page(d: Path, db: Path) -> None:
        root = items_root(db)
        with open(db, "r+b") as f:
            f.seek((root - 1) * 4096)
            f.write(os.urandom(4096))

    def wal(db: Path) -> Path:
        return db.with_name(db.name + "-wal")

    def orphans(n: int) -> Callable[[Path, Path], None]:
        def add(d: Path, db: Path) -> None:
            for i in range(n):
                shutil.copy(clip, d / "media" / f"orphan{i}.mp4")

        return add

    cases: list[tuple[str, Path, Callable[[Path, Path], None]]] = [
        ("zeroed", base, lambda d, db: db.write_bytes(bytes(db.stat().st_size))),
        ("garbage", base, lambda d, db: db.write_bytes(os.urandom(db.stat().st_size))),
        ("cut in half", base, lambda d, db: os.truncate(db, db.stat().st_size // 2)),
        ("bad page", base, bad_page),
        ("empty (0 bytes)", base, lambda d, db: db.write_bytes(b"")),
        ("db missing", base, lambda d, db: db.unlink()),
        ("index dir missing", base, lambda d, db: shutil.rmtree(d / "index")),
        (
            "WAL cut in half",
            crashed,
            lambda d, db: os.truncate(wal(db), wal(db).stat().st_size // 2),
        ),
        ("WAL deleted", crashed, lambda d, db: wal(db).unlink()),
        ("commit record missing", base, lambda d, db: (d / "index" / "index.commits").unlink(True)),
        ("2 orphan videos", base, orphans(2)),
        ("40 orphan videos", base, orphans(40)),
    ]
    keys = ("refusing", "Error", "removing", "removed", "cannot verify", "none was removed")
    for name, src, damage in cases:
        d = w / name.replace(" ", "_").replace("(", "").replace(")", "")
        shutil.copytree(src, d)
        damage(d, d / "index" / "index.sqlite3")
        before = len(list((d / "media").iterdir()))
        log_path = w / f"{d.name}.log"
        s = ServerProcess(env(d), log_path=log_path)
        try:
            s.start(60)
            outcome = f"started, {httpx.get(s.url + '/info').json()['count']} items"
        except RuntimeError:
            assert s.proc is not None
            outcome = f"exit {s.proc.returncode}"
        s.stop()
        after = len(list((d / "media").iterdir()))
        text = log_path.read_text()
        first = next((ln for ln in text.splitlines() if any(k in ln for k in keys)), "")
        print(
            f"{name}\t{outcome}\tmedia {before}->{after}\ttraceback={'Traceback' in text}\t"
            + first.replace(str(d), "DATA")[:200],
            flush=True,
        )


if __name__ == "__main__":
    main()
