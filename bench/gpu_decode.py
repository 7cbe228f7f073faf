"""Decoding on a GPU node: the NVDEC backend checked against PyAV, then decode-only clips/s of
PyAV processes vs NVDEC decoders vs both, on 30-s H.264 (720p and 270p, 30 fps, with AAC).

    python bench/gpu_decode.py --out gpu-out            # the device run (bench/gpu_all.sh)
    python bench/gpu_decode.py --check-only --seconds 4 # the NVDEC check alone

The clips are made here with PyAV (libx264 veryfast, crf 23): a textured picture that pans and
changes, so the bitrate is that of real footage (a flat test pattern decodes unrealistically
fast). Decoding is to the ``paper`` windows (15 segments of 32 frames at 128 px, log-mel
audio): the work the product does, not just the codec. The decode runs use
``pemt.infer``'s decoder pool with a consumer that drops the windows.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import numpy as np  # noqa: E402


def make_clip(path: Path, seconds: float, width: int, height: int, fps: int = 30) -> Path:
    """A textured, panning H.264/AAC clip (bitrate like real footage)."""
    rng = np.random.default_rng(width)
    coarse = rng.integers(0, 256, (height // 8 + 2, (width * 2) // 8 + 2, 3), dtype=np.uint8)
    texture = np.kron(coarse, np.ones((8, 8, 1), np.uint8))  # blocks, then a little noise
    texture = (texture.astype(np.int16) + rng.integers(-12, 13, texture.shape)).clip(0, 255)
    texture = texture.astype(np.uint8)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"crf": "23", "preset": "veryfast"}
        a = c.add_stream("aac", rate=44100)
        a.layout = "stereo"  # type: ignore[union-attr]
        n = int(seconds * fps)
        for i in range(n):
            x = (i * 4) % width
            img = np.ascontiguousarray(texture[:height, x : x + width])
            img[: height // 6] = (i * 3) % 256  # a band whose colour changes every frame
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        t = np.arange(int(seconds * 44100)) / 44100
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for k in range(0, len(tone), 1024):
            chunk = np.stack([tone[k : k + 1024]] * 2)
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = 44100, k, Fraction(1, 44100)
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    return path


def check_nvdec(path: Path, media: object) -> dict[str, object]:
    """NVDEC windows vs PyAV windows (and vs the NVDEC backend fed by PyAV's YUV, which
    isolates the hardware decode) on one file: frame differences, times, masks, audio."""
    import torch

    from pemt.media import load_windows
    from pemt.media._nvdec import NvdecSegmentStream
    from pemt.media._windows import _windows

    t0 = time.perf_counter()
    cpu = load_windows(path, media, decoder="cpu")
    t1 = time.perf_counter()
    gpu = load_windows(path, media, decoder="nvdec")
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    stream = NvdecSegmentStream(path, media, frames="pyav", device="cuda")
    ref = list(_windows(stream, media, max(1, media.num_segments // 2)))  # type: ignore[attr-defined]
    out: dict[str, object] = {
        "file": path.name,
        "windows": [len(cpu), len(gpu)],
        "decoders": sorted({w.decoder for w in gpu}),
        "pyav_s": round(t1 - t0, 3),
        "nvdec_s": round(t2 - t1, 3),
    }
    if len(cpu) != len(gpu):
        out["ok"] = False
        return out
    d = np.concatenate(
        [np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16)).ravel() for a, b in
         zip(cpu, gpu, strict=True)]
    )  # fmt: skip
    e = np.concatenate(
        [np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16)).ravel() for a, b in
         zip(ref, gpu, strict=True)]
    )  # fmt: skip
    per_frame = [
        float(np.abs(a.frames[s, j].astype(np.int16) - b.frames[s, j].astype(np.int16)).mean())
        for a, b in zip(cpu, gpu, strict=True)
        for s in range(int(a.visual_mask.sum()))
        for j in range(a.frames.shape[1])
    ]
    out.update(
        {
            "times_equal": all(
                (a.start, a.end) == (b.start, b.end) for a, b in zip(cpu, gpu, strict=True)
            ),
            "masks_equal": all(
                np.array_equal(a.visual_mask, b.visual_mask)
                and np.array_equal(a.audio_mask, b.audio_mask)
                for a, b in zip(cpu, gpu, strict=True)
            ),
            "audio_equal": all(
                np.array_equal(a.audio, b.audio) for a, b in zip(cpu, gpu, strict=True)
            ),
            "vs_pyav_mean": round(float(d.mean()), 4),
            "vs_pyav_p99": float(np.percentile(d, 99)),
            "vs_pyav_max": int(d.max()),
            "worst_frame_mean": round(max(per_frame), 3),  # a wrong frame pick shows here
            "vs_same_yuv_mean": round(float(e.mean()), 4),  # NVDEC's YUV vs libavcodec's
            "vs_same_yuv_max": int(e.max()),
        }
    )
    out["ok"] = bool(
        out["times_equal"] and out["masks_equal"] and out["audio_equal"]
        and d.mean() <= 2.0 and d.max() <= 10 and max(per_frame) <= 3.0
    )  # fmt: skip
    return out


def decode_rate(paths: list[Path], media: object, plan: object) -> dict[str, float]:
    """Clips/s of decoding ``paths`` into windows with ``plan`` (a pemt.infer.DecodePlan)."""
    import torch

    from pemt.infer import _Decoders, _Job

    out: queue.Queue[object] = queue.Queue(maxsize=256)
    t0 = time.perf_counter()
    pool = _Decoders([str(p) for p in paths], _Job(media, None, None), plan, out)  # type: ignore[arg-type]
    ended, errors, windows, kinds = 0, 0, 0, {}
    try:
        while ended < len(paths):
            item = out.get()
            if item[0] == "window":  # type: ignore[index]
                windows += 1
                continue
            ended += 1
            _, _, error, info = item  # type: ignore[misc]
            errors += error is not None
            kinds[info["decoder"]] = kinds.get(info["decoder"], 0) + 1
    finally:
        pool.close()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"clips": len(paths), "errors": errors, "windows": windows, "seconds": round(wall, 2),
            "clips_per_s": round(len(paths) / wall, 2), **{f"by_{k}": v for k, v in kinds.items()}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=Path("gpu-out"))
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clips", type=int, default=32, help="files per throughput run")
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--clips-dir", type=Path, default=Path("/tmp/pemt-clips"))
    ap.add_argument("--plans", default="pyav:16,nvdec:4,nvdec:8,nvdec:12,nvdec:8+pyav:8",
                    help="decoder mixes: nvdec:N threads, pyav:N processes, joined by +")  # fmt: skip
    args = ap.parse_args(argv)

    from pemt.config import get_config
    from pemt.infer import DecodePlan

    media = get_config("paper").media
    args.out.mkdir(parents=True, exist_ok=True)
    clips_dir = args.clips_dir
    clips_dir.mkdir(parents=True, exist_ok=True)
    sizes = {"720p": (1280, 720), "270p": (480, 270)}
    files = {}
    for name, (w, h) in sizes.items():
        t0 = time.perf_counter()
        files[name] = make_clip(clips_dir / f"{name}.mp4", args.seconds, w, h)
        mb = files[name].stat().st_size / 2**20
        print(f"made {name}: {mb:.1f} MiB, {8 * mb / args.seconds:.1f} Mbit/s "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
    report: dict[str, object] = {"cpus": os.cpu_count()}
    report["check"] = [check_nvdec(files[n], media) for n in sizes]
    for c in report["check"]:  # type: ignore[attr-defined]
        print("NVDEC check:", json.dumps(c), flush=True)
    if not args.check_only:
        rows = []
        for name in sizes:
            paths = [files[name]] * args.clips
            for spec in args.plans.split(","):
                counts = dict(part.split(":") for part in spec.split("+"))
                plan = DecodePlan(nvdec_threads=int(counts.get("nvdec", 0)),
                                  cpu_processes=int(counts.get("pyav", 0)))  # fmt: skip
                r = decode_rate(paths, media, plan)
                rows.append({"clip": name, "plan": spec, **r})
                print(f"| {name} | {spec} | {r['clips_per_s']} clips/s | {r}", flush=True)
        report["decode"] = rows
    (args.out / "gpu_decode.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
