"""What the index's integrity guarantees cost: per-write latency, start-up check, backup.

1. ``writes``: single-item ``upsert`` and ``delete`` latency (each one transaction, WAL,
   ``synchronous=FULL``), ``--writes`` of each, into an index of ``--dim``-d vectors in the three
   modalities the server stores. Run it once with this checkout and once with ``--code`` pointing
   at an older checkout (e.g. ``git worktree add /tmp/base <commit>``) to compare before/after;
   the script imports ``server.index`` from ``--code``.
2. ``open``: for each ``--sizes`` n, an index of n items (ingested with ``upsert_many``), the time
   of ``PRAGMA quick_check`` on it, and of a whole open with ``verify`` on and off.
3. ``backup``: ``backup_index`` of the same index (SQLite online backup API + checks).

Parts 2 and 3 need the new code (``verify=``, ``backup_index``).

    .venv/bin/python bench/bench_durability.py --writes 300 --sizes 10000,100000 \\
        --out bench/results/reliability_b_bench.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_fsync(work: Path, n: int = 200) -> float:
    """p50 seconds of one 512-byte in-place write + fdatasync on the bench's file system: the
    unit the commit record adds to every write (this VM's disk swings from ~0.1 to ~4 ms)."""
    fd = os.open(work / "fsync.bin", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, bytes(1024), 0)
        os.fsync(fd)
        ts = []
        for i in range(n):
            t0 = time.perf_counter()
            os.pwrite(fd, i.to_bytes(8, "little") * 64, (i % 2) * 512)
            os.fdatasync(fd)
            ts.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return pct(ts, 0.5)


def bench_writes(VectorIndex, work: Path, n: int, dim: int) -> list[str]:  # noqa: N803
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, 3, dim), dtype=np.float32)
    rows = []
    with VectorIndex(work / "w", dim=dim) as ix:
        for i in range(20):  # warm-up: tables and caches exist
            ix.upsert(f"warm{i}", {"fused": vecs[i, 0]})
        up, de = [], []
        for i in range(n):
            v = {"fused": vecs[i, 0], "audio": vecs[i, 1], "visual": vecs[i, 2]}
            t0 = time.perf_counter()
            ix.upsert(f"c{i}", v, metadata={"label": f"l{i % 7}", "i": i})
            up.append(time.perf_counter() - t0)
        for i in range(n):
            t0 = time.perf_counter()
            ix.delete(f"c{i}")
            de.append(time.perf_counter() - t0)
    for name, xs in (("upsert", up), ("delete", de)):
        rows.append(
            f"| {name} | {n} | {statistics.mean(xs) * 1e3:.2f} | {pct(xs, 0.5) * 1e3:.2f} "
            f"| {pct(xs, 0.99) * 1e3:.2f} |"
        )
    return rows


def bench_open(VectorIndex, Record, backup_index, work: Path, n: int, dim: int) -> str:  # noqa: N803
    path = work / f"o{n}"
    rng = np.random.default_rng(1)
    with VectorIndex(path, dim=dim) as ix:
        for lo in range(0, n, 5000):
            m = min(5000, n - lo)
            v = rng.standard_normal((m, 3, dim), dtype=np.float32)
            ix.upsert_many(
                Record(f"i{lo + j}", {"fused": v[j, 0], "audio": v[j, 1], "visual": v[j, 2]})
                for j in range(m)
            )
    db = path / "index.sqlite3"
    mb = db.stat().st_size / 1e6
    con = sqlite3.connect(db)
    t0 = time.perf_counter()
    assert con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    qc = time.perf_counter() - t0
    con.close()
    times = {}
    for verify in (True, False):
        t0 = time.perf_counter()
        with VectorIndex(path, verify=verify):
            times[verify] = time.perf_counter() - t0
    out = work / f"b{n}"
    t0 = time.perf_counter()
    backup_index(path, out)
    bk = time.perf_counter() - t0
    shutil.rmtree(out)
    return f"| {n:,} | {mb:,.0f} | {qc:.2f} | {times[True]:.2f} | {times[False]:.2f} | {bk:.2f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout to import server.index from")
    ap.add_argument("--writes", type=int, default=300)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--sizes", default="", help="comma-separated item counts for part 2 and 3")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(args.code))
    from server import index as idx_mod

    commit = subprocess.run(
        ["git", "-C", str(args.code), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(args.code), "status", "--porcelain", "server/index"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="bench_dur_", dir=args.workdir))
    lines = [
        f"Code: {args.code} at {commit}{' + uncommitted server/index changes' if dirty else ''}; "
        f"dim={args.dim}; load average {os.getloadavg()[0]:.1f} at start.",
        "",
        "| write | n | mean ms | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    try:
        log(f"writes: {args.writes} upserts + deletes")
        before = bench_fsync(work)
        lines += bench_writes(idx_mod.VectorIndex, work, args.writes, args.dim)
        lines.append(
            f"\nfdatasync of one 512-byte block, p50: {before * 1e3:.2f} ms before the writes, "
            f"{bench_fsync(work) * 1e3:.2f} ms after."
        )
        sizes = [int(s) for s in args.sizes.split(",") if s]
        if sizes:
            from server.index import backup_index

            lines += [
                "",
                "| items | db MB | quick_check s | open (verify) s | open (no verify) s | backup s |",
                "|---|---|---|---|---|---|",
            ]
            for n in sizes:
                log(f"open/backup: {n} items")
                lines.append(
                    bench_open(idx_mod.VectorIndex, idx_mod.Record, backup_index, work, n, args.dim)
                )
        lines.append(f"\nload average {os.getloadavg()[0]:.1f} at end.")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
