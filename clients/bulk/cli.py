"""``pemt index bulk SOURCE``: index a folder, a glob or a manifest on Ray (``clients.bulk``).

Prints progress on stderr and the report (JSON) on stdout; also writes the report to
``--report``. Exit status: 0 when every file was indexed or skipped, 1 when some failed (they
are in the report), 2 for a bad argument or a failure of the service or of Ray."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from clients.cli import json_object

__all__ = ["register"]


def register(sub: Any) -> None:
    index = sub.add_parser("index", help="index video libraries into a PEMT service")
    isub = index.add_subparsers(dest="index_command", required=True, metavar="COMMAND")
    p = isub.add_parser(
        "bulk",
        help="decode on Ray, embed in batches, store through the service's API",
        description=(__doc__ or "").splitlines()[0],
    )
    p.add_argument("source", help="a folder, a quoted glob ('lib/**/*.mp4') or a manifest "
                   "(.jsonl or .csv: path, id, metadata)")  # fmt: skip
    p.add_argument("--url", help="the service (default: $PEMT_URL or http://127.0.0.1:8080)")
    p.add_argument("--api-key", help="X-API-Key (default: $PEMT_API_KEY)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model-repository", help="the exported model repository the service "
                       "serves (ONNX Runtime actors; default $PEMT_MODEL_PATH)")  # fmt: skip
    model.add_argument("--triton-url", help="Triton's gRPC host:port serving the same model")
    p.add_argument("--model-name", default="pemt")
    p.add_argument("--address", help="a Ray cluster (default: a local Ray instance)")
    p.add_argument("--workers", type=int, help="local Ray: CPUs, i.e. files decoded at once "
                   "(default: all cores)")  # fmt: skip
    p.add_argument("--model-actors", type=int, default=1, help="model actors (default 1)")
    p.add_argument("--batch", type=int, default=8, help="windows per model call (default 8)")
    p.add_argument("--model-threads", type=int, help="ONNX Runtime threads per actor")
    p.add_argument("--stride", type=float, help="seconds between windows (default: half)")
    p.add_argument("--metadata", type=json_object, help="JSON object added to every clip")
    p.add_argument(
        "--results",
        default="pemt-bulk-results.jsonl",
        help="results file: what is done (read and appended; default %(default)s)",
    )
    p.add_argument("--report", help="write the report here too (JSON)")
    p.add_argument("--retry-failed", action="store_true", help="retry files that failed before")
    p.add_argument("--object-store-mb", type=int, default=256, help="local Ray's object store")
    p.add_argument(
        "--decoder",
        choices=["cpu", "nvdec", "auto"],
        default="cpu",
        help="video decoder of the decode tasks (nvdec: a GPU's NVDEC)",
    )
    p.add_argument(
        "--decode-gpus",
        type=float,
        default=0.0,
        help="GPU share per decode task (e.g. 0.125: 8 NVDEC decoders a GPU)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from clients.bulk import print_progress, run_bulk
    from clients.sdk import PemtError

    repo = args.model_repository or (None if args.triton_url else os.environ.get("PEMT_MODEL_PATH"))
    try:
        report = run_bulk(
            args.source,
            url=args.url,
            api_key=args.api_key,
            model_repository=repo,
            model_name=args.model_name,
            triton_url=args.triton_url,
            address=args.address,
            workers=args.workers,
            model_actors=args.model_actors,
            batch=args.batch,
            model_threads=args.model_threads,
            stride=args.stride,
            metadata=args.metadata,
            results=args.results,
            retry_failed=args.retry_failed,
            object_store_mb=args.object_store_mb,
            decoder=args.decoder,
            decode_gpus=args.decode_gpus,
            progress=print_progress,
        )
    except PemtError as e:
        print(f"pemt index bulk: the service failed: {e}; files finished so far are in "
              f"{args.results}, run again to go on", file=sys.stderr)  # fmt: skip
        return 2
    out = json.dumps(report.to_dict(), indent=2)
    if args.report:
        Path(args.report).write_text(out + "\n")
    print(out)
    return 1 if report.failed else 0
