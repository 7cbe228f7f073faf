"""Peak memory of the service (uvicorn + decode children) on small hostile uploads.

    .venv/bin/python bench/bench_hostile_memory.py [--config small] [--repo DIR]
        [--server-root DIR] [--cases gap,gap2,...] [--limit-gb 8]
        [--out FILE]

Cases (files made here with PyAV, ``pemt.media.encode``):

- ``gap``: a ~2.5 KB MP4 of 13 tiny H.264 frames 299 s apart (3588 s, under the default
  one-hour limit), default stride; ``gap2``: two such uploads at once.
- ``gap_stride1``: 3 frames 299 s apart (598 s), ``stride=1``.
- ``one_batch``: a real 135-s 64x48 8-fps H.264/AAC clip, default stride: 8 windows, one
  batch of the default ``PEMT_MAX_BATCH=8`` (the reference: the model's own working memory).
- ``long``: a real 30-minute clip like it at ``stride=8`` (223 windows from an honest file,
  under the default limit of 256); ``long2``: two at once; ``long_batch2``: one, with
  ``PEMT_MAX_BATCH=2``.

Each case gets a fresh server (``uvicorn server.main:create_app``, default settings except
``PEMT_DECODE_TIMEOUT_S=600``, the ``--config`` model exported by ``export/build_engine.py``). A thread polls ``/proc`` every
50 ms and sums VmRSS over the server process and all its descendants (forkserver, decode
children); the table reports the idle figure before the upload, the peak while it ran, the
answer's status and window count. Above ``--limit-gb`` the server is killed (the box is
shared) and the row says so. ``--server-root`` runs the server from another checkout (e.g.
an earlier commit unpacked with ``git archive``) to measure before/after with one script.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_service import cpu_model  # noqa: E402

from pemt.media.encode import make_sparse_video, make_test_video  # noqa: E402
from server.testing import ServerProcess, build_test_repository  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def tree_rss(root_pid: int) -> tuple[int, int]:
    """VmRSS (bytes) of ``root_pid`` and the sum over it and every process descending from it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, own, todo = 0, 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    total += rss
                    own = rss if pid == root_pid else own
                    break
        except OSError:
            continue
    return own, total


class Sampler(threading.Thread):
    """Polls the server's tree RSS; kills the server when it passes ``limit`` bytes."""

    def __init__(self, srv: ServerProcess, limit: int) -> None:
        super().__init__(daemon=True)
        assert srv.proc is not None
        self.srv, self.pid, self.limit = srv, srv.proc.pid, limit
        self.peak = self.peak_parent = 0
        self.killed = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            own, rss = tree_rss(self.pid)
            self.peak = max(self.peak, rss)
            self.peak_parent = max(self.peak_parent, own)
            if rss > self.limit and not self.killed:
                self.killed = True
                _kill_tree(self.pid)
            time.sleep(0.05)

    def stop(self) -> tuple[int, int]:
        self._stop_event.set()
        self.join()
        return self.peak, self.peak_parent


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (children first)."""
    kids: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    for k in kids:
        _kill_tree(k)
    with contextlib.suppress(OSError):
        os.kill(pid, 9)


def own_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def model_plateau(repo: Path, batches: int, batch: int) -> list[tuple[int, int]]:
    """RSS of this process after each of ``batches`` runs of ONNX Runtime on ``batch`` random
    windows (no decoding, no service): the model's own working memory as it warms up."""
    import asyncio

    import numpy as np

    from server.backends.onnx import OnnxBackend

    backend = OnnxBackend.create(repo, max_batch=batch)
    rng = np.random.default_rng(0)
    inputs = {}
    for spec in backend.input_specs:
        if spec.dtype == "bool":
            inputs[spec.name] = np.ones((batch, *spec.shape), bool)
        else:
            high = 255 if spec.dtype == "uint8" else 1
            inputs[spec.name] = rng.integers(0, high, (batch, *spec.shape)).astype(spec.np_dtype)
    out = [(0, own_rss())]

    async def run() -> None:
        for i in range(batches):
            await backend.embed(inputs)
            out.append((i + 1, own_rss()))
        await backend.close()

    asyncio.run(run())
    return out


def post(url: str, path: Path, fields: dict[str, str], out: list[tuple[int, str]]) -> None:
    try:
        with httpx.Client(base_url=url, timeout=900) as c, open(path, "rb") as f:
            r = c.post("/embed", files={"file": (path.name, f, "video/mp4")}, data=fields)
        if r.status_code == 200:
            out.append((200, f"{len(r.json()['items'])} windows"))
        else:
            out.append((r.status_code, r.json()["error"]["code"]))
    except httpx.HTTPError as e:
        out.append((0, f"no answer ({type(e).__name__})"))


def run_case(
    name: str,
    env: dict[str, str],
    path: Path,
    fields: dict[str, str],
    copies: int,
    limit: int,
    log: Path,
    cwd: Path,
) -> tuple[str, int, int, int, str, float, bool]:
    srv = ServerProcess(env, log_path=log, cwd=cwd).start(timeout=120)
    try:
        time.sleep(1.0)
        assert srv.proc is not None
        idle = tree_rss(srv.proc.pid)[1]
        sampler = Sampler(srv, limit)
        sampler.start()
        answers: list[tuple[int, str]] = []
        threads = [
            threading.Thread(target=post, args=(srv.url, path, fields, answers))
            for _ in range(copies)
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        peak, parent = sampler.stop()
        result = ", ".join(f"{s} {what}" for s, what in sorted(answers))
        return name, idle, peak, parent, result, wall, sampler.killed
    finally:
        srv.stop()
        if srv.proc is not None and srv.proc.poll() is None:
            _kill_tree(srv.proc.pid)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--repo", type=Path, help="an existing model repository (skips the export)")
    ap.add_argument("--server-root", type=Path, default=ROOT, help="checkout the server runs from")
    ap.add_argument("--cases", default="gap,gap2,gap_stride1,one_batch,long,long2,long_batch2")
    ap.add_argument("--limit-gb", type=float, default=8.0)
    ap.add_argument("--label", default="", help="a note for the table title (e.g. the commit)")
    ap.add_argument(
        "--model-plateau",
        type=int,
        default=0,
        help="also run ONNX Runtime in this process on this many batches of 8 random windows",
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pemt-bench-hostile-"))
    repo = args.repo or build_test_repository(ROOT / ".cache" / "bench" / "repo-small", args.config)

    files = {
        "gap": make_sparse_video(tmp / "gap13.mp4", [299.0 * i for i in range(13)]),
        "gap3": make_sparse_video(tmp / "gap3.mp4", [299.0 * i for i in range(3)]),
    }
    wanted = args.cases.split(",")
    if {"long", "long2", "long_batch2"} & set(wanted):
        files["long"] = make_test_video(
            tmp / "long.mp4", seconds=1800, width=64, height=48, fps=8, sample_rate=16000
        )
    if "one_batch" in wanted:
        files["one_batch"] = make_test_video(
            tmp / "one_batch.mp4", seconds=135, width=64, height=48, fps=8, sample_rate=16000
        )
    # name -> (file, form fields, uploads at once, extra settings)
    cases: dict[str, tuple[str, dict[str, str], int, dict[str, str]]] = {
        "gap": ("gap", {}, 1, {}),
        "gap2": ("gap", {}, 2, {}),
        "gap_stride1": ("gap3", {"stride": "1"}, 1, {}),
        "one_batch": ("one_batch", {}, 1, {}),
        "long": ("long", {"stride": "8"}, 1, {}),
        "long2": ("long", {"stride": "8"}, 2, {}),
        "long_batch2": ("long", {"stride": "8"}, 1, {"PEMT_MAX_BATCH": "2"}),
    }
    root = args.server_root.resolve()
    env = {
        "PYTHONPATH": str(root),
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_MAX_UPLOAD_BYTES": str(1 << 30),
        "PEMT_DECODE_TIMEOUT_S": "600",  # time is not what this measures
    }
    rows = []
    limit = int(args.limit_gb * 2**30)
    for name in wanted:
        key, fields, copies, extra = cases[name]
        path = files[key]
        case_env = {**env, **extra, "PEMT_DATA_DIR": str(tmp / f"data-{name}")}
        srv_log = tmp / f"server-{name}.log"
        row = run_case(name, case_env, path, fields, copies, limit, srv_log, root)
        rows.append((row, path.stat().st_size, {**fields, **extra}, copies))
        print(f"{name}: idle {row[1] / 2**20:.0f} MiB peak {row[2] / 2**20:.0f} MiB -> {row[4]}")

    def gib(b: int) -> str:
        return f"{b / 2**30:.2f}"

    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        f"# Peak service memory on hostile uploads{' (' + args.label + ')' if args.label else ''}",
        "",
        f"- command: `{cmd}`",
        f"- machine: 2-core shared CPU box ({cpu_model()}, {os.cpu_count()} logical CPUs), "
        f"Python {platform.python_version()}; ONNX Runtime CPU; model `{args.config}`",
        f"- server code: {root}; default settings but PEMT_DECODE_TIMEOUT_S=600; date "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| case | upload | fields / settings | at once | idle GiB | peak GiB | peak of uvicorn "
        "alone GiB | answers | wall s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for (name, idle, peak, parent, result, wall, killed), size, fields, copies in rows:
        shown = f"> {gib(peak)} (killed at the limit)" if killed else gib(peak)
        flds = ", ".join(f"{k}={v}" for k, v in fields.items()) or "-"
        lines.append(
            f"| {name} | {size / 1024:.1f} KiB | {flds} | {copies} | {gib(idle)} | {shown} | "
            f"{gib(parent)} | {result} | {wall:.1f} |"
        )
    if args.model_plateau:
        steps = model_plateau(repo, args.model_plateau, 8)
        lines += [
            "",
            f"ONNX Runtime alone ({args.config}, batches of 8 random windows, in the bench "
            "process): RSS after n batches: "
            + ", ".join(f"{n}: {gib(b)}" for n, b in steps if n in (0, 1, 2, 5, len(steps) - 1))
            + " GiB",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
