"""ONNX Runtime (folded, exported graph) vs PyTorch eager (factored, as trained) on CPU.

For each config: build the model (seeded), fold it, export the single-model ONNX graph exactly as
``export/build_engine.py`` does (``pemt.export.export_onnx``), then time both on the *same*
inputs (uint8 frames, log-mel audio, all segments real) in one process, one after the other.
Reports median ms per forward, the ratio, and the max abs difference between the two outputs.

    .venv/bin/python bench/bench_export.py --out bench/results/export.md

``paper`` is big (723 GFLOP per 30-s window): it runs at batch 1, one window, a few iterations.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pemt import spec  # noqa: E402
from pemt.config import get_config  # noqa: E402
from pemt.export import compare, export_onnx, ort_run, ort_session, random_inputs  # noqa: E402
from pemt.export._onnx import SingleWrapper, torch_run  # noqa: E402
from pemt.model import build_model, fold  # noqa: E402

# (config, batch, iterations)
DEFAULT_CASES = [("small", 1, 10), ("small", 4, 5), ("paper", 1, 3)]


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime as ort

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores (load average at start {load}); torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), onnxruntime {ort.__version__}, Python "
        f"{platform.python_version()}"
    )


def bench_case(name: str, batch: int, iters: int, workdir: Path) -> dict[str, object]:
    cfg = get_config(name)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    folded = fold(model).eval()
    x = random_inputs(spec.model_inputs(cfg), batch=1, seed=7)
    x = {k: np.repeat(v, batch, axis=0) for k, v in x.items()}  # row 0: all segments real
    names = [s.name for s in spec.model_outputs(cfg)]
    path = workdir / f"{name}.onnx"
    t0 = time.perf_counter()
    export_onnx(
        SingleWrapper(folded, cfg),
        x,
        names,
        path,
        output_shapes={s.name: s.shape for s in spec.model_outputs(cfg)},
    )
    export_s = time.perf_counter() - t0
    sess = ort_session(path)
    eager = SingleWrapper(model, cfg)
    eager_folded = SingleWrapper(folded, cfg)
    feeds = tuple(torch.from_numpy(v) for v in x.values())

    def run(module: torch.nn.Module) -> Callable[[], None]:
        def fn() -> None:
            with torch.inference_mode():
                module(*feeds)

        return fn

    ms = interleaved(
        {"torch": run(eager), "torch folded": run(eager_folded), "ort": lambda: sess.run(names, x)},
        iters,
    )
    p = compare("ort vs eager", ort_run(sess, x), torch_run(eager, x, names))
    return {
        "config": name,
        "batch": batch,
        "iters": iters,
        "params factored": sum(p.numel() for p in model.parameters()),
        "params folded": sum(p.numel() for p in folded.parameters()),
        "onnx MiB": path.stat().st_size / 2**20,
        "export s": export_s,
        "torch ms": ms["torch"],
        "torch folded ms": ms["torch folded"],
        "ort ms": ms["ort"],
        "max abs": p.max_abs,
    }


def interleaved(fns: dict[str, Callable[[], object]], iters: int) -> dict[str, float]:
    """Median ms per function; the functions take turns each iteration (after one warm-up
    round), so a noisy neighbour on a shared machine slows all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def table(rows: list[dict[str, object]]) -> str:
    head = (
        "| config | batch | iters | params factored -> folded | ONNX | export | "
        "PyTorch eager (factored) ms | ONNX Runtime (folded) ms | eager / ORT | "
        "eager folded ms | max abs diff |"
    )
    lines = [head, "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['iters']} | "
            f"{r['params factored']:,} -> {r['params folded']:,} | {r['onnx MiB']:.1f} MiB | "
            f"{r['export s']:.1f} s | {r['torch ms']:.1f} | {r['ort ms']:.1f} | "
            f"{float(r['torch ms']) / float(r['ort ms']):.2f}x | "  # type: ignore[arg-type]
            f"{float(r['torch folded ms']):.1f} | {float(r['max abs']):.1e} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "--cases",
        default=",".join(f"{c}:{b}:{i}" for c, b, i in DEFAULT_CASES),
        help="config:batch:iterations, comma separated",
    )
    ap.add_argument("--out", type=Path, help="write the markdown report here")
    args = ap.parse_args(argv)
    cases = [(c, int(b), int(i)) for c, b, i in (s.split(":") for s in args.cases.split(","))]
    env = machine()
    print(env, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pemt-bench-export-") as tmp:
        for name, batch, iters in cases:
            r = bench_case(name, batch, iters, Path(tmp))
            print(r, flush=True)
            rows.append(r)
    report = "\n".join(
        [
            "# Export: ONNX Runtime (folded) vs PyTorch eager (factored), CPU",
            "",
            f"Command: `.venv/bin/python bench/bench_export.py --cases {args.cases}"
            + (f" --out {args.out}`" if args.out else "`"),
            "",
            f"Machine: {env}.",
            "",
            "Same inputs for both (uint8 frames, log-mel audio, all segments real), one process, "
            "median of `iters` timed forwards after one warm-up each, the three runtimes taking "
            "turns every iteration (the machine is shared, so contention hits all alike). ONNX Runtime runs the graph "
            "`export/build_engine.py` writes (folded projections, normalization inside, opset 17, "
            "CPUExecutionProvider, default threads); PyTorch runs the factored model as trained "
            "(`matrix_exp` per projection per call) under `inference_mode`; *eager folded* is "
            "PyTorch on the folded model, to separate what folding buys from what ONNX Runtime "
            "buys. Absolute times on this shared 2-core machine are noisy; the ratios are "
            "measured side by side.",
            "",
            table(rows),
            "",
        ]
    )
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
