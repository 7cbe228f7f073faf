"""`pemt-client`: talk to a PEMT server from the shell.

    pemt-client embed clip.mp4 --id clip1 --metadata '{"label": "dog"}'
    pemt-client search --file query.mp4 -k 5          (or --id ITEM, --vector '[...]')
    pemt-client classify --file query.mp4 --filter '{"split": "train"}'
    pemt-client list --limit 20
    pemt-client delete clip1

``--url`` / ``$PEMT_URL`` (default http://127.0.0.1:8080, the API of ``docker compose up``),
``--api-key`` / ``$PEMT_API_KEY``. Output is JSON. A bad argument, a refused request or no
answer prints one line to stderr and exits non-zero (2: bad input here, 1: the service).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clients.sdk import DEFAULT_URL, PemtClient, PemtError

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"pemt-client: error: {message}\n")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _vector(text: str) -> list[float]:
    try:
        value = json.loads(text)
        return [float(x) for x in value]
    except (json.JSONDecodeError, TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected a JSON list of numbers, got {text[:60]!r}"
        ) from None


def _existing_file(text: str) -> Path:
    p = Path(text)
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pemt-client", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--url", help=f"server URL (default: $PEMT_URL or {DEFAULT_URL})")
    p.add_argument("--api-key", help="X-API-Key (default: $PEMT_API_KEY)")
    p.add_argument(
        "--connect-timeout", type=float, default=5.0, help="seconds to open a connection"
    )
    p.add_argument(
        "--read-timeout", type=float, default=300.0, help="seconds to wait for an answer"
    )
    p.add_argument(
        "--retries", type=int, default=4, help="retries on 429/503 and failed connections"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    e = sub.add_parser("embed", help="upload a video; prints ids, times and timings")
    e.add_argument("file", type=_existing_file)
    e.add_argument("--id", help="clip id (generated when omitted)")
    e.add_argument("--metadata", type=_json_object, help="JSON object stored with the windows")
    e.add_argument("--no-store", action="store_true", help="embed only, do not index")
    e.add_argument("--window", type=float, help="seconds of content per window")
    e.add_argument("--stride", type=float, help="seconds between windows")
    e.add_argument("--vectors", action="store_true", help="print the embeddings too")

    for name, help_ in (("search", "nearest stored items"), ("classify", "k-NN label vote")):
        s = sub.add_parser(name, help=help_)
        q = s.add_mutually_exclusive_group(required=True)
        q.add_argument("--file", type=_existing_file, help="a query video")
        q.add_argument("--id", help="a stored item id")
        q.add_argument("--vector", type=_vector, help="a JSON list of numbers")
        s.add_argument("-k", type=int, default=10)
        s.add_argument("--modality", choices=["fused", "audio", "visual"], default="fused")
        s.add_argument(
            "--filter", type=_json_object, help='metadata match, e.g. \'{"label": "dog"}\''
        )
        s.add_argument("--window", type=float, help="with --file: seconds of content per window")
        s.add_argument("--stride", type=float, help="with --file: seconds between windows")
        if name == "classify":
            s.add_argument("--label-key", default="label", help="the metadata key that votes")

    d = sub.add_parser("delete", help="delete an item (or all windows of a clip id)")
    d.add_argument("id")

    ls = sub.add_parser("list", help="list stored items")
    ls.add_argument("--offset", type=int, default=0)
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--clip-id")
    return p


def _run(args: argparse.Namespace, client: PemtClient) -> Any:
    if args.command == "embed":
        res = client.embed(
            args.file,
            id=args.id,
            metadata=args.metadata,
            store=not args.no_store,
            window=args.window,
            stride=args.stride,
        )
        out = dataclasses.asdict(res)
        if not args.vectors:
            for item in out["items"]:
                item.pop("embedding")
        return out
    if args.command in ("search", "classify"):
        query = dict(
            file=args.file,
            id=args.id,
            vector=args.vector,
            k=args.k,
            filter=args.filter,
            modality=args.modality,
            window=args.window,
            stride=args.stride,
        )
        if args.command == "search":
            return dataclasses.asdict(client.search(**query))
        return dataclasses.asdict(client.classify(**query, label_key=args.label_key))
    if args.command == "delete":
        return {"id": args.id, "deleted": client.delete(args.id)}
    if args.command == "list":
        return dataclasses.asdict(client.list(args.offset, args.limit, clip_id=args.clip_id))
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with PemtClient(
            args.url,
            api_key=args.api_key,
            connect_timeout=args.connect_timeout,
            read_timeout=args.read_timeout,
            retries=args.retries,
        ) as client:
            out = _run(args, client)
    except PemtError as e:
        print(f"pemt-client: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"pemt-client: error: {e}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
