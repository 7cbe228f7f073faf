"""`pemt data synth OUT --n N [--classes K] [--seconds S]`: the synthetic labeled dataset."""

from __future__ import annotations

import argparse


def _synth(args: argparse.Namespace) -> int:
    from pemt.data.synth import make_synth_dataset

    r = make_synth_dataset(
        args.out, args.n, classes=args.classes, seconds=args.seconds, seed=args.seed,
        width=args.width, height=args.height, fps=args.fps, class_hum=args.class_hum,
        progress=not args.quiet,
    )  # fmt: skip
    sound = "speech (espeak-ng)" if r.speech else "tone patterns (espeak-ng not found)"
    print(
        f"wrote {r.clips} clips of {r.seconds:g} s, {len(r.classes)} classes, sound: {sound}, to {r.out}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="datasets: synth")
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    s = sub.add_parser(
        "synth",
        help="write a synthetic labeled audio-visual dataset (H.264/AAC MP4 in class folders)",
    )
    s.add_argument("out", help="output folder (class subfolders + labels.csv)")
    s.add_argument("--n", type=int, required=True, help="number of clips")
    s.add_argument("--classes", type=int, default=8, help="number of classes (2..16)")
    s.add_argument("--seconds", type=float, default=8.0, help="clip length in seconds")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--width", type=int, default=128)
    s.add_argument("--height", type=int, default=96)
    s.add_argument("--fps", type=int, default=16)
    s.add_argument(
        "--class-hum",
        type=float,
        default=0.15,
        help="amplitude of a class-pitched hum under the speech (0: speech only)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_synth)
