"""Benchmark server.index.VectorIndex: exact flat vs IVF-Flat vs HNSW-Flat.

For each data set (``random``: i.i.d. unit vectors, the worst case for approximate search;
``clustered``: unit vectors around ``n / 1000`` centers, queries fresh draws from the same
mixture, so IVF/HNSW recall means something) and each size:

1. ingest into SQLite + a flat FAISS index with ``upsert_many`` in 10k-row transactions;
2. per index type: open the directory with that type, which rebuilds FAISS from SQLite
   (``build s``: read vectors, train IVF, add) and writes a snapshot (``snap write s``);
   time single ``search`` calls (k=10, including the SQLite lookup of the hits: what the API
   pays), a filtered search (``{"part": 3}``, 10% of items), and one ``search_batch`` of all
   queries; recall@10 against the flat index's results; then reopen from the snapshot
   (``open snap s``).

Memory: vectors are generated and ingested in chunks, never held whole; one index is open at
a time (1M x 768 float32 = 3 GB per index; reading a snapshot briefly holds two copies).

    .venv/bin/python bench/bench_index.py --sizes 100000,1000000 --queries 200 \\
        --out bench/results/index.md
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.index import Record, VectorIndex  # noqa: E402

CHUNK = 10_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class DataSet:
    """Seeded generator of one data set, in chunks; ``queries`` from the same distribution."""

    def __init__(self, kind: str, n: int, dim: int, seed: int, spread: float = 1.0) -> None:
        self.kind, self.n, self.dim, self.seed, self.spread = kind, n, dim, seed, spread
        rng = np.random.default_rng(seed + 1)
        self.centers = (
            unit(rng.standard_normal((max(10, n // 1000), dim))) if kind == "clustered" else None
        )

    def _draw(self, rng: np.random.Generator, m: int) -> np.ndarray:
        g = rng.standard_normal((m, self.dim), dtype=np.float32)
        if self.centers is None:
            return unit(g)
        labels = rng.integers(0, len(self.centers), m)
        return unit(self.centers[labels] + g * (self.spread / np.sqrt(self.dim)))

    def chunks(self):
        for lo in range(0, self.n, CHUNK):
            rng = np.random.default_rng((self.seed, lo))
            yield lo, self._draw(rng, min(CHUNK, self.n - lo))

    def queries(self, m: int) -> np.ndarray:
        return self._draw(np.random.default_rng((self.seed, 2**40)), m)


def ingest(path: Path, data: DataSet) -> float:
    t0 = time.perf_counter()
    with VectorIndex(path, dim=data.dim, snapshot_every=0, snapshot_on_close=False) as ix:
        for lo, x in data.chunks():
            ix.upsert_many(
                Record(f"{data.kind[0]}{lo + i}", {"fused": x[i]}, {"part": (lo + i) % 10})
                for i in range(len(x))
            )
            if lo % 100_000 == 0:
                log(f"  ingested {lo + len(x)}")
    return time.perf_counter() - t0


def measure(ix: VectorIndex, queries: np.ndarray, k: int) -> dict:
    lat = []
    results = []
    for q in queries:
        t = time.perf_counter()
        hits = ix.search(q, k)
        lat.append(time.perf_counter() - t)
        results.append([h.id for h in hits])
    flat = []
    for q in queries[: max(10, len(queries) // 4)]:
        t = time.perf_counter()
        ix.search(q, k, filter={"part": 3})
        flat.append(time.perf_counter() - t)
    t = time.perf_counter()
    ix.search_batch(queries, k)
    batch_s = time.perf_counter() - t
    lat_ms = np.array(lat) * 1000
    return {
        "p50": float(np.percentile(lat_ms, 50)),
        "p99": float(np.percentile(lat_ms, 99)),
        "qps": len(lat) / sum(lat),
        "batch_qps": len(queries) / batch_s,
        "filter_p50": float(np.percentile(np.array(flat) * 1000, 50)),
        "ids": results,
    }


def recall(got: list[list[str]], truth: list[list[str]], k: int) -> float:
    return sum(len(set(g) & set(t)) for g, t in zip(got, truth, strict=True)) / (k * len(truth))


def run_one(path: Path, data: DataSet, index_type: str, queries: np.ndarray, args) -> dict:
    opts = dict(
        index_type=index_type,
        snapshots=True,  # measure snapshot write and open for every type, flat included
        nprobe=args.nprobe,
        hnsw_m=args.hnsw_m,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search,
    )
    t0 = time.perf_counter()
    with VectorIndex(path, **opts) as ix:
        opened = time.perf_counter() - t0
        st = ix.stats()
        build = st["load"]["seconds"]
        row = {"build_s": build, "snap_write_s": max(0.0, opened - build)}
        fs = st["modalities"]["fused"]
        row["params"] = (
            f"nlist={fs['nlist']}, nprobe={fs['nprobe']}"
            if fs.get("ivf")
            else f"M={args.hnsw_m}, efC={args.ef_construction}, efS={args.ef_search}"
            if index_type == "hnsw"
            else ""
        )
        log(f"  {index_type}: built in {build:.1f} s ({row['params']}), measuring")
        row.update(measure(ix, queries, args.k))
    t0 = time.perf_counter()
    with VectorIndex(path, **opts) as ix:
        assert ix.stats()["load"]["source"] == "snapshot"
        row["open_snap_s"] = time.perf_counter() - t0
    return row


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated item counts")
    ap.add_argument("--queries", type=int, default=200, help="single-query searches per index")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--data", default="random,clustered")
    ap.add_argument("--types", default="flat,ivf,hnsw")
    ap.add_argument("--nprobe", type=int, default=None, help="IVF lists probed (default nlist/16)")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument(
        "--hnsw-max", type=int, default=200_000, help="skip HNSW above this size (build time)"
    )
    ap.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    types = args.types.split(",")
    if "flat" not in types:
        types.insert(0, "flat")  # the exact reference for recall
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_index_"))
    work.mkdir(parents=True, exist_ok=True)

    rows = []
    started = time.time()
    for kind in args.data.split(","):
        for n in sizes:
            path = work / f"{kind}-{n}"
            shutil.rmtree(path, ignore_errors=True)
            data = DataSet(kind, n, args.dim, args.seed)
            queries = data.queries(args.queries)
            log(f"{kind} n={n}: ingest")
            ing = ingest(path, data)
            log(f"{kind} n={n}: ingested in {ing:.1f} s ({n / ing:.0f} rows/s)")
            truth = None
            for t in types:
                if t == "hnsw" and n > args.hnsw_max:
                    rows.append({"data": kind, "n": n, "type": t, "skipped": True})
                    log(f"  hnsw skipped at n={n} (--hnsw-max {args.hnsw_max})")
                    continue
                r = run_one(path, data, t, queries, args)
                truth = truth or r["ids"]
                r["recall"] = recall(r.pop("ids"), truth, args.k)
                r.update(data=kind, n=n, type=t, ingest_s=ing)
                rows.append(r)
                log(f"  {t}: {r}")
            shutil.rmtree(path, ignore_errors=True)
    table = render(rows, args, time.time() - started)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)


def render(rows: list[dict], args, total_s: float) -> str:
    head = (
        "| data | n | index | params | ingest rows/s | build s | snap write s | open snap s "
        "| p50 ms | p99 ms | QPS 1 thread | batch QPS | filtered p50 ms | recall@10 |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        if r.get("skipped"):
            lines.append(
                f"| {r['data']} | {r['n']:,} | {r['type']} | skipped (--hnsw-max {args.hnsw_max}) |"
                + " |" * 10
            )
            continue
        lines.append(
            f"| {r['data']} | {r['n']:,} | {r['type']} | {r['params']} | {r['n'] / r['ingest_s']:,.0f} "
            f"| {r['build_s']:.1f} | {r['snap_write_s']:.1f} | {r['open_snap_s']:.1f} "
            f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['qps']:,.0f} | {r['batch_qps']:,.0f} "
            f"| {r['filter_p50']:.2f} | {r['recall']:.3f} |"
        )
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:12]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return (
        head
        + "\n".join(lines)
        + f"\n\nk={args.k}, {args.queries} queries, dim={args.dim}; total {total_s / 60:.1f} min, "
        + f"peak RSS {peak:.1f} GB; python {platform.python_version()}; load average at end "
        + f"{os.getloadavg()[0]:.1f}\n\n```\n"
        + "\n".join(cpu)
        + "\n```\n"
    )


if __name__ == "__main__":
    main()
