"""The same search workload through the FAISS store and the Milvus backend, on one machine.

100k clustered unit vectors (n/1000 centers, as bench_index.py), k=10, single queries from the
same mixture; filters off and on (``{"part": 3}``: 10% of the items). Each backend is used as
the API uses it (``VectorIndex.search`` / ``MilvusIndex.search``: hits with their metadata).
Recall@10 against exact numpy brute force over the same items (within the filter when on).

Milvus here is ``milvus-lite server`` (Milvus's gRPC protocol over a pure-Python engine with
FAISS segment indexes, one gRPC worker): a test server, not Milvus's C++ engine.

    .venv/bin/python bench/bench_backends.py --n 100000 --dim 768 --queries 200 \\
        --out bench/results/backends.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.index import Record, VectorIndex  # noqa: E402
from server.index.milvus import MilvusIndex  # noqa: E402
from server.testing import MilvusLiteServer  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def data(n: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((max(10, n // 1000), dim)))
    x = unit(centers[rng.integers(0, len(centers), n)] + rng.standard_normal((n, dim)) / dim**0.5)
    q = unit(
        centers[rng.integers(0, len(centers), queries)]
        + rng.standard_normal((queries, dim)) / dim**0.5
    )
    return x, q


def ingest(ix: object, x: np.ndarray, chunk: int) -> float:
    t0 = time.perf_counter()
    for lo in range(0, len(x), chunk):
        ix.upsert_many(  # type: ignore[attr-defined]
            Record(f"v{i}", {"fused": x[i]}, {"part": i % 10})
            for i in range(lo, min(lo + chunk, len(x)))
        )
    return time.perf_counter() - t0


def measure(ix: object, x: np.ndarray, q: np.ndarray, flt: dict | None, k: int = 10) -> dict:
    ids = np.arange(len(x))
    if flt:
        ids = ids[ids % 10 == flt["part"]]
    exact = [set(ids[np.argsort(-(x[ids] @ v))[:k]].tolist()) for v in q]
    times, found = [], 0
    for v, want in zip(q, exact, strict=True):
        t0 = time.perf_counter()
        hits = ix.search(v, k, filter=flt)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t0)
        found += len(want & {int(h.id[1:]) for h in hits})
    t = np.array(times) * 1000
    return {
        "p50": float(np.median(t)),
        "p99": float(np.percentile(t, 99)),
        "recall": found / (k * len(q)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    x, q = data(args.n, args.dim, args.queries)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pemt-bench-") as tmp:
        root = Path(tmp)
        for index_type in ("flat", "hnsw"):
            log(f"FAISS {index_type}: ingest {args.n}")
            with VectorIndex(
                root / f"faiss-{index_type}", dim=args.dim, index_type=index_type
            ) as ix:
                t_in = ingest(ix, x, args.chunk)
                for flt in (None, {"part": 3}):
                    m = measure(ix, x, q, flt)
                    rows.append(("FAISS store", index_type, flt is not None, t_in, m))
                    log(f"  {rows[-1]}")
        server = MilvusLiteServer(root / "milvus" / "data", log_path=root / "milvus.log").start()
        try:
            for index_type, params, search in (
                ("FLAT", {}, {}),
                ("HNSW", {"M": 32, "efConstruction": 40}, {"ef": 64}),
            ):
                log(f"Milvus {index_type}: ingest {args.n}")
                ix = MilvusIndex(
                    server.uri, f"b{uuid.uuid4().hex[:8]}", args.dim, thumbnails=root / "thumbs",
                    index_type=index_type, index_params=params, search_params=search, timeout_s=600,
                )  # fmt: skip
                try:
                    t_in = ingest(ix, x, args.chunk)
                    t0 = time.perf_counter()
                    ix._c().flush(ix.collection, timeout=1800)  # seal segments: indexes build
                    t_flush = time.perf_counter() - t0
                    for flt in (None, {"part": 3}):
                        m = measure(ix, x, q, flt)
                        rows.append(("Milvus (milvus-lite)", index_type.lower(), flt is not None,
                                     t_in + t_flush, m))  # fmt: skip
                        log(f"  {rows[-1]}")
                finally:
                    ix._c().drop_collection(ix.collection)
                    ix.close()
        finally:
            server.stop()
    lines = [
        f"`bench/bench_backends.py --n {args.n} --dim {args.dim} --queries {args.queries}` on "
        f"{platform.node()} (2-core shared CPU box), {time.strftime('%Y-%m-%d %H:%M')} UTC",
        "",
        "| backend | index | filter | ingest+build s | p50 ms | p99 ms | recall@10 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for backend, index_type, flt, t_in, m in rows:
        lines.append(
            f"| {backend} | {index_type} | {'part=3 (10%)' if flt else 'none'} | {t_in:.1f} | "
            f"{m['p50']:.2f} | {m['p99']:.2f} | {m['recall']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
