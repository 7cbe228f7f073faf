"""API throughput with one vs two replicas over one Milvus index (milvus-lite), same machine.

Each replica is a uvicorn process (PEMT_INDEX_BACKEND=milvus, one shared collection and media
folder, the model exported the real way, embedded ONNX Runtime). ``--clients`` threads send
requests round-robin over the replicas: ``embed`` posts a short H.264/AAC clip (decode +
model + index write), ``search`` posts a stored vector (index only). Requests/s over the
whole run, p50/p99 latency.

    .venv/bin/python bench/bench_replicas.py --config tiny --clients 4 --requests 40 \\
        --out bench/results/replicas.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pemt.media.encode import make_test_video  # noqa: E402
from server.testing import MilvusLiteServer, ServerProcess, build_test_repository  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(urls: list[str], kind: str, clients: int, requests: int, clip: Path, vec: list) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    body = clip.read_bytes()

    def worker(w: int) -> None:
        with httpx.Client(timeout=120) as c:
            for i in range(requests // clients):
                url = urls[(w + i) % len(urls)]
                t0 = time.perf_counter()
                if kind == "embed":
                    r = c.post(url + "/embed", files={"file": ("c.mp4", body)},
                               data={"id": f"b{w}-{i}"})  # fmt: skip
                else:
                    r = c.post(url + "/search", json={"vector": vec, "k": 10})
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:100]}")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {"rps": len(lat) / wall, "p50": float(np.median(ms)), "p99": float(np.percentile(ms, 99)),
            "errors": len(errors)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=40, help="per kind and replica count")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pemt-replicas-") as tmp:
        root = Path(tmp)
        log(f"export a {args.config} model")
        repo = build_test_repository(root / "repo", args.config)
        clip = make_test_video(root / "c.mp4", seconds=3, width=160, height=120)
        milvus = MilvusLiteServer(root / "milvus" / "data", log_path=root / "milvus.log").start()
        try:
            for n in (1, 2):
                env = {
                    "PEMT_MODEL_PATH": str(repo),
                    "PEMT_INDEX_BACKEND": "milvus",
                    "PEMT_MILVUS_URI": milvus.uri,
                    "PEMT_MILVUS_COLLECTION": f"r{uuid.uuid4().hex[:8]}",
                    "PEMT_MEDIA_DIR": str(root / f"media{n}"),
                    "PEMT_MAX_CONCURRENT_JOBS": "8",
                    "PEMT_QUEUE_WAIT_S": "60",
                }
                procs = [
                    ServerProcess({**env, "PEMT_DATA_DIR": str(root / f"d{n}-{i}")},
                                  log_path=root / f"api{n}-{i}.log").start()
                    for i in range(n)
                ]  # fmt: skip
                try:
                    urls = [p.url for p in procs]
                    r = httpx.post(urls[0] + "/embed", files={"file": ("c.mp4", clip.read_bytes())},
                                   data={"id": "q"}, timeout=120)  # fmt: skip
                    vec = r.json()["items"][0]["embedding"]
                    for kind in ("embed", "search"):
                        m = run(urls, kind, args.clients, args.requests, clip, vec)
                        rows.append((n, kind, m))
                        log(f"{n} replica(s) {kind}: {m}")
                finally:
                    for p in procs:
                        p.stop()
        finally:
            milvus.stop()
    lines = [
        f"`bench/bench_replicas.py --config {args.config} --clients {args.clients} --requests "
        f"{args.requests}` on {platform.node()} (2-core shared CPU box), "
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC",
        "",
        "| replicas | request | req/s | p50 ms | p99 ms | errors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n, kind, m in rows:
        what = "POST /embed (3-s clip)" if kind == "embed" else "POST /search (vector, k=10)"
        lines.append(
            f"| {n} | {what} | {m['rps']:.2f} | {m['p50']:.0f} | {m['p99']:.0f} | {m['errors']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
