"""perf_analyzer against a real Triton serving the exported model: the recipe in
docs/ARCHITECTURE.md ("Measuring a served model"), run end to end.

    .venv/bin/python bench/perf_triton.py [--config small] [--repo model_repository]
        [--batch 1] [--concurrency 1:4] [--perf-analyzer perf_analyzer]
        [--out bench/results/perf_triton.md]

Serves ``--repo`` (default: a freshly initialised ``--config`` exported with
``--triton-backend python``, speed does not depend on training) with the CPU tritonserver of
nvidia-pytriton (``pemt.triton_serve.TritonServer``, what ``pemt triton serve`` runs), or uses ``--url`` (host:grpc-port) of a Triton
already running, e.g. NVIDIA's container from docker-compose.yml. Then runs::

    perf_analyzer -m pemt -i grpc -u URL -b BATCH --concurrency-range A:B \
        --measurement-mode count_windows --measurement-request-count N -f OUT.csv

and writes a markdown table (stdout and ``--out``) with the command and the machine.
perf_analyzer itself is not a dependency: it ships in Triton's SDK container
(``nvcr.io/nvidia/tritonserver:<YY.MM>-py3-sdk``) and in the ``perf-analyzer`` wheel.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def perf_command(
    exe: str, url: str, model: str, batch: int, concurrency: str, requests: int, csv_path: Path
) -> list[str]:
    return [
        exe,
        "-m", model,
        "-i", "grpc",
        "-u", url,
        "-b", str(batch),
        "--concurrency-range", concurrency,
        "--measurement-mode", "count_windows",
        "--measurement-request-count", str(requests),
        "--stability-percentage", "50",
        "--max-trials", "5",
        "-f", str(csv_path),
    ]  # fmt: skip


def run(args: argparse.Namespace) -> str:
    load_before = os.getloadavg()[0]
    exe = shutil.which(args.perf_analyzer) or args.perf_analyzer
    if not Path(exe).is_file():
        raise SystemExit(
            f"perf_analyzer not found ({args.perf_analyzer}); use Triton's SDK container or "
            "pass --perf-analyzer PATH"
        )
    with tempfile.TemporaryDirectory(prefix="pemt-perf-") as tmp:
        csv_path = Path(tmp) / "perf.csv"
        if args.url:
            cmd = perf_command(
                exe, args.url, args.model, args.batch, args.concurrency, args.requests, csv_path
            )
            subprocess.run(cmd, check=True)
            where = f"Triton at {args.url}"
        else:
            from pemt.triton_serve import TritonServer
            from server.testing import build_test_repository

            repo = Path(args.repo) if args.repo else None
            if repo is None:
                repo = build_test_repository(Path(tmp) / "repo", args.config)
            with TritonServer(repo, models=[args.model]) as server:
                cmd = perf_command(
                    exe,
                    server.grpc_url,
                    args.model,
                    args.batch,
                    args.concurrency,
                    args.requests,
                    csv_path,
                )
                subprocess.run(cmd, check=True)
            where = f"nvidia-pytriton's CPU tritonserver, python backend, `{args.config}` model"
        rows = sorted(csv.DictReader(csv_path.open()), key=lambda r: int(r["Concurrency"]))
    shown = " ".join(shlex.quote(c) for c in [Path(cmd[0]).name, *cmd[1:-2]])
    lines = [
        f"perf_analyzer, {where}; batch {args.batch} per request",
        f"command: `{shown}`",
        f"machine: {args.machine} ({platform.machine()}, {os.cpu_count()} CPUs); 1-min load "
        f"average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
        "",
        "| concurrency | inferences/s | p50 ms | p90 ms | p99 ms | server queue ms | server compute ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:

        def ms(key: str, r: dict[str, str] = r) -> str:
            return f"{float(r[key]) / 1000:.1f}"

        lines.append(
            f"| {r['Concurrency']} | {float(r['Inferences/Second']):.2f} | {ms('p50 latency')} | "
            f"{ms('p90 latency')} | {ms('p99 latency')} | {ms('Server Queue')} | "
            f"{ms('Server Compute Infer')} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--config", default="small", help="model variant to export when no --repo")
    p.add_argument("--repo", help="an exported model repository to serve")
    p.add_argument("--url", help="host:port of a running Triton's gRPC endpoint (no server here)")
    p.add_argument("--model", default="pemt")
    p.add_argument("--batch", type=int, default=1, help="windows per request")
    p.add_argument("--concurrency", default="1:4", help="perf_analyzer --concurrency-range")
    p.add_argument("--requests", type=int, default=8, help="requests per measurement window")
    p.add_argument("--perf-analyzer", default="perf_analyzer", help="the perf_analyzer binary")
    p.add_argument("--machine", default="2-core shared CPU box", help="described in the output")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args()
    table = run(args)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
