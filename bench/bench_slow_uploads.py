"""Slow uploads against job slots: do clients that dribble their body block everyone else?

    .venv/bin/python bench/bench_slow_uploads.py [--slow 2] [--rate 2] [--jobs 2]
        [--queue-wait 0] [--watch 40] [--normal 3] [--code-root DIR] [--repo DIR] [--out FILE]

Starts the service (uvicorn on 127.0.0.1, the tiny model exported by export/build_engine.py)
with ``PEMT_MAX_CONCURRENT_JOBS=--jobs``. ``--slow`` raw HTTP clients start a ``POST /embed``
(valid multipart head, 1 MB declared) and then send ``--rate`` bytes/s. Meanwhile a normal
client uploads a 3-s H.264/AAC clip ``--normal`` times, spread over ``--watch`` seconds, and
``/info`` is polled every 0.5 s for the job slots in use. Reports per normal upload its status
and how long it took (waiting included), the slot occupancy, and what the slow clients got back
and when. ``--code-root`` runs the service from another source tree (e.g. an older commit
unpacked with ``git archive``) to measure before/after with the same script.
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import shlex
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pemt.media.encode import make_test_video  # noqa: E402
from server.testing import ServerProcess, build_test_repository  # noqa: E402

HEAD = (
    b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
    b"Content-Type: video/mp4\r\n\r\n"
)


class Dribbler(threading.Thread):
    """POST /embed, then ``rate`` bytes/s until answered or ``until``."""

    def __init__(self, port: int, rate: float, until: float) -> None:
        super().__init__(daemon=True)
        self.port, self.rate, self.until = port, rate, until
        self.status: str = "no answer"
        self.after: float | None = None
        self.sent = 0

    def run(self) -> None:
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(
                b"POST /embed HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: multipart/form-data; boundary=B\r\n"
                b"Content-Length: 1000000\r\n\r\n" + HEAD
            )
            while time.monotonic() < self.until:
                ready, _, _ = select.select([s], [], [], 1.0 / self.rate)
                if ready:
                    data = s.recv(4096)
                    self.status = data.split(b"\r\n", 1)[0].decode() or "closed"
                    self.after = time.monotonic() - t0
                    return
                try:
                    s.sendall(b"x")
                    self.sent += 1
                except OSError as e:
                    self.status, self.after = f"send failed ({e})", time.monotonic() - t0
                    return


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--slow", type=int, default=2, help="slow clients")
    ap.add_argument("--rate", type=float, default=2.0, help="bytes/s each slow client sends")
    ap.add_argument("--jobs", type=int, default=2, help="PEMT_MAX_CONCURRENT_JOBS")
    ap.add_argument("--queue-wait", type=float, default=0.0, help="PEMT_QUEUE_WAIT_S")
    ap.add_argument("--watch", type=float, default=40.0, help="seconds to observe")
    ap.add_argument("--normal", type=int, default=3, help="normal uploads over the watch")
    ap.add_argument("--code-root", type=Path, help="run the service from this source tree")
    ap.add_argument("--repo", type=Path, help="an existing model repository (skips the export)")
    ap.add_argument("--label", default="", help="name of this run in the report")
    ap.add_argument("--out", type=Path, help="append the markdown report here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pemt-bench-slow-"))
    repo = args.repo or build_test_repository(tmp / "repo", "tiny")
    clip = make_test_video(tmp / "clip.mp4", seconds=3, width=160, height=120)
    env = {
        "PEMT_MODEL_PATH": str(repo),
        "PEMT_DATA_DIR": str(tmp / "data"),
        "PEMT_MAX_CONCURRENT_JOBS": str(args.jobs),
        "PEMT_QUEUE_WAIT_S": str(args.queue_wait),
        "PEMT_DECODE_WORKERS": "1",
    }
    root = (args.code_root or Path(__file__).resolve().parent.parent).resolve()
    if args.code_root:
        env["PYTHONPATH"] = str(root)
    srv = ServerProcess(env, cwd=root, log_path=tmp / "server.log").start()
    occupancy: list[int] = []
    normal: list[tuple[float, int, float]] = []
    try:
        t0 = time.monotonic()
        until = t0 + args.watch
        slow = [Dribbler(srv.port, args.rate, until) for _ in range(args.slow)]
        for d in slow:
            d.start()
        done = threading.Event()

        def poll() -> None:
            with httpx.Client(base_url=srv.url, timeout=10) as c:
                while not done.is_set():
                    occupancy.append(int(c.get("/info").json()["jobs"]["in_flight"]))
                    time.sleep(0.5)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        data = clip.read_bytes()
        with httpx.Client(base_url=srv.url, timeout=args.watch + 60) as c:
            for i in range(args.normal):
                at = 1.0 + i * (args.watch - 6.0) / max(args.normal - 1, 1)
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                ts = time.monotonic()
                r = c.post("/embed", files={"file": ("c.mp4", data, "video/mp4")})
                normal.append((ts - t0, r.status_code, time.monotonic() - ts))
        for d in slow:
            d.join(args.watch + 5)
        done.set()
        poller.join(5)
    finally:
        srv.stop()

    lines = [
        f"### {args.label or root.name}: {args.slow} clients at {args.rate:g} B/s, "
        f"{args.jobs} job slots, PEMT_QUEUE_WAIT_S={args.queue_wait:g}",
        "",
        f"- command: `python {shlex.join(sys.argv)}`",
        f"- machine: 2-core shared CPU box ({os.cpu_count()} logical CPUs, "
        f"{platform.python_version()}); service from `{root}`",
        f"- job slots in use while watched ({len(occupancy)} samples, every 0.5 s): max "
        f"{max(occupancy, default=0)}, mean {statistics.fmean(occupancy or [0]):.2f}",
        "",
        "| normal upload at s | status | took s |",
        "| ---: | ---: | ---: |",
        *(f"| {at:.1f} | {st} | {took:.2f} |" for at, st, took in normal),
        "",
        "| slow client | bytes sent | answer | after s |",
        "| ---: | ---: | --- | ---: |",
        *(
            f"| {i} | {d.sent} | {d.status} | {'-' if d.after is None else f'{d.after:.1f}'} |"
            for i, d in enumerate(slow)
        ),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
