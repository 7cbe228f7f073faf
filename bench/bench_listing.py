"""Time one page of ``list`` (100 items) at depth 0, N/2 and N-100, by ``offset`` and by cursor
(``after``), on the FAISS+SQLite store and on Milvus (a ``milvus-lite server``); for Milvus also
the listing before keyset paging (every page read all N ids, sorted them, sliced).

    python bench/bench_listing.py --n 100000 [--milvus-n 20000] [--out bench/results/listing.md]

The listing reads no vectors, so items get small random 8-d vectors through the index API.
milvus-lite is a pure-Python engine: its absolute numbers say little about a Milvus server; the
point is how each way grows with the depth.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.index import Record, VectorIndex  # noqa: E402

DIM = 8
PAGE = 100


def fill(ix: Any, n: int, batch: int = 5000) -> float:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for lo in range(0, n, batch):
        x = rng.standard_normal((min(batch, n - lo), DIM)).astype(np.float32)
        ix.upsert_many(Record(f"item{lo + i:07d}", {"fused": v}) for i, v in enumerate(x))
    return time.perf_counter() - t0


def timed(fn: Callable[[], list[Any]], want: list[str], repeat: int) -> float:
    """Median seconds of ``fn`` over ``repeat`` runs; checks it returns the ids ``want``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = fn()
        times.append(time.perf_counter() - t0)
        assert [i.id for i in got] == want, (got[:2], want[:2])
    return statistics.median(times)


def old_milvus_list(ix: Any, offset: int, limit: int) -> list[Any]:
    """``MilvusIndex.list`` before keyset paging: every id, sorted, sliced, rows fetched."""
    page = sorted(ix._ids('id != ""'))[offset : offset + limit]
    rows = {r["id"]: r for r in ix._query(ix._in(page), ix._fields)}
    return [ix._item(rows[i]) for i in page if i in rows]


def measure(ix: Any, n: int, repeat: int, old: bool) -> list[tuple[str, int, float]]:
    ids = [f"item{i:07d}" for i in range(n)]
    out = []
    for depth in (0, n // 2, n - PAGE):
        want = ids[depth : depth + PAGE]
        cursor = ids[depth - 1] if depth else None
        out.append(("offset", depth, timed(partial(ix.list, depth, PAGE), want, repeat)))
        by_cursor = partial(ix.list, 0, PAGE, after=cursor)
        out.append(("after", depth, timed(by_cursor, want, repeat)))
        if old:
            before = timed(partial(old_milvus_list, ix, depth, PAGE), want, 1)
            out.append(("before (all ids)", depth, before))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="items in the SQLite store")
    ap.add_argument("--milvus-n", type=int, default=100_000, help="items in milvus-lite")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, help="append a markdown table here")
    args = ap.parse_args()
    rows: list[tuple[str, int, str, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        with VectorIndex(Path(tmp) / "ix", dim=DIM) as ix:
            load = fill(ix, args.n)
            print(f"sqlite: {args.n} items loaded in {load:.1f} s", flush=True)
            rows += [("sqlite", args.n, *r) for r in measure(ix, args.n, args.repeat, False)]
        if args.milvus_n:
            from server.index.milvus import MilvusIndex
            from server.testing import MilvusLiteServer

            server = MilvusLiteServer(Path(tmp) / "milvus").start()
            try:
                ix = MilvusIndex(
                    server.uri, "bench", DIM, thumbnails=Path(tmp) / "t", index_type="FLAT"
                )
                load = fill(ix, args.milvus_n)
                print(f"milvus-lite: {args.milvus_n} items loaded in {load:.1f} s", flush=True)
                rows += [
                    ("milvus-lite", args.milvus_n, *r)
                    for r in measure(ix, args.milvus_n, args.repeat, True)
                ]
                ix.close()
            finally:
                server.stop()
    lines = [
        "| backend | N | page by | depth | ms per page of 100 |",
        "|---|---|---|---|---|",
        *(f"| {b} | {n} | {how} | {d} | {s * 1000:.1f} |" for b, n, how, d, s in rows),
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        load_avg = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        with open(args.out, "a") as f:
            f.write(f"\nload average before the run's end: {load_avg}\n\n{table}\n")


if __name__ == "__main__":
    main()
