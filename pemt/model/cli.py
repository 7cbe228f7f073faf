"""``pemt params`` (parameter counts per component and sharing mode) and ``pemt import avbert``
(AVBERT's checkpoints as PEMT checkpoints).

The models are built on the meta device, so counting the 167M-parameter paper model allocates
no weights and takes well under a second.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["param_table", "register"]


def param_table(config: str) -> dict[str, Any]:
    """``{"config", "sharing", "modes": {mode: count_parameters(...)}}`` for every sharing mode."""
    import torch

    from pemt.config import SHARING_MODES, load_config
    from pemt.model.checkpoint import count_parameters
    from pemt.model.pemt import PEMT

    cfg = load_config(config)
    modes = {}
    for mode in SHARING_MODES:
        with torch.device("meta"):
            modes[mode] = count_parameters(PEMT(cfg.replace(sharing=mode)))
    return {"config": cfg.name, "sharing": cfg.sharing, "modes": modes}


def _format(table: dict[str, Any]) -> str:
    modes: dict[str, dict[str, int]] = table["modes"]
    rows = list(next(iter(modes.values())))
    heads = [m + (" *" if m == table["sharing"] else "") for m in modes]
    widths = [max(12, len(h)) for h in heads]
    lines = [
        f"parameters of config {table['config']!r} per sharing mode (* = the config's own)",
        f"{'component':<14}" + "".join(f"{h:>{w + 2}}" for h, w in zip(heads, widths, strict=True)),
    ]
    for row in rows:
        cells = "".join(f"{modes[m][row]:>{w + 2},}" for m, w in zip(modes, widths, strict=True))
        lines.append(f"{row:<14}{cells}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    table = param_table(args.config)
    print(json.dumps(table, indent=2) if args.json else _format(table))
    return 0


def _import_avbert(args: argparse.Namespace) -> int:
    from pemt.model.avbert import import_avbert

    report = import_avbert(
        args.checkpoint,
        args.out,
        base=args.base,
        heads=args.heads,
        layers=args.layers,
        segments=args.segments,
        head_out=args.head_out,
    )
    for line in report.lines():
        print(line)
    print(f"wrote {args.out}" + (f" and {args.head_out}" if args.head_out else ""))
    return 0


def register(subparsers: Any) -> None:
    """Add ``pemt params`` and ``pemt import avbert`` to the ``pemt`` command line."""
    imp = subparsers.add_parser(
        "import",
        help="convert another code base's checkpoint into a PEMT checkpoint",
        description="Convert a checkpoint written by another code base into a PEMT checkpoint.",
    )
    kinds = imp.add_subparsers(dest="kind", required=True, metavar="KIND")
    av = kinds.add_parser(
        "avbert",
        help="AVBERT's checkpoints (github.com/sangho-vision/avbert)",
        description="Read an AVBERT checkpoint (torch.save pickle with model_state_dict or "
        "state_dict, or a .safetensors file with AVBERT's key names) without running code from "
        "it, map every tensor into PEMT's model and write one PEMT .safetensors checkpoint. "
        "Sizes come from the tensor shapes; heads, depth of a shared layer, segments and the "
        "media recipe come from --base and the flags.",
    )
    av.add_argument("checkpoint", help="AVBERT checkpoint file (.pyth / .pth / .safetensors)")
    av.add_argument("--out", required=True, help="PEMT checkpoint to write (.safetensors)")
    av.add_argument(
        "--base", default="paper", help="config for what shapes cannot tell (default: paper)"
    )
    av.add_argument("--heads", type=int, help="attention heads (default: the base config's)")
    av.add_argument(
        "--layers", type=int, help="depth of a shared layer (default: the base config's)"
    )
    av.add_argument("--segments", type=int, help="segments per window (default: the base config's)")
    av.add_argument(
        "--head-out", help="also write the classifier head (concat_head, concat_seq_head)"
    )
    av.set_defaults(func=_import_avbert)

    p = subparsers.add_parser(
        "params",
        help="parameter counts per component and sharing mode",
        description="Count parameters per component (visual_cnn, audio_cnn, projections, "
        "embeddings, transformers, total) for every sharing mode of a config.",
    )
    p.add_argument("--config", default="paper", help="variant name or JSON file (default: paper)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run)
