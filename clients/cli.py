"""`pemt-client`: talk to a PEMT server from the shell.

    pemt-client embed clip.mp4 --id clip1 --metadata '{"label": "dog"}'
    pemt-client embed film.mp4            (longer than the server's synchronous limit: a job,
                                           with a progress bar on stderr)
    pemt-client jobs; pemt-client job ID --wait; pemt-client cancel ID
    pemt-client search --file query.mp4 -k 5          (or --id ITEM, --vector '[...]')
    pemt-client classify --file query.mp4 --filter '{"split": "train"}'
    pemt-client list --limit 20; pemt-client list --after ID (the page's next)
    pemt-client list --all > items.jsonl              (every item, by cursor, a JSON line each)
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
from typing import Any, get_args

from clients.sdk import DEFAULT_URL, Job, Modality, PemtClient, PemtError, SearchModality

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"pemt-client: error: {message}\n")


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object given on the command line (metadata, filters)."""
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
    e.add_argument("--metadata", type=json_object, help="JSON object stored with the windows")
    e.add_argument("--no-store", action="store_true", help="embed only, do not index")
    e.add_argument("--window", type=float, help="seconds of content per window")
    e.add_argument("--stride", type=float, help="seconds between windows")
    e.add_argument("--vectors", action="store_true", help="print the embeddings too")
    how = e.add_mutually_exclusive_group()
    how.add_argument(
        "--job",
        action="store_true",
        help="embed as a background job (default: when the file is longer than the server's "
        "PEMT_EMBED_MAX_DURATION_S)",
    )
    how.add_argument("--no-job", action="store_true", help="never fall back to a job")
    e.add_argument("--no-wait", action="store_true", help="with a job: print it and return")

    for name, help_ in (("search", "nearest stored items"), ("classify", "k-NN label vote")):
        s = sub.add_parser(name, help=help_)
        q = s.add_mutually_exclusive_group(required=True)
        q.add_argument("--file", type=_existing_file, help="a query video")
        q.add_argument("--id", help="a stored item id")
        q.add_argument("--vector", type=_vector, help="a JSON list of numbers")
        s.add_argument("-k", type=int, default=10)
        # search also takes best: each item by its best shared vector (finds one-stream edits)
        modalities = get_args(SearchModality if name == "search" else Modality)
        s.add_argument("--modality", choices=modalities, default="fused")
        s.add_argument(
            "--filter", type=json_object, help='metadata match, e.g. \'{"label": "dog"}\''
        )
        s.add_argument("--window", type=float, help="with --file: seconds of content per window")
        s.add_argument("--stride", type=float, help="with --file: seconds between windows")
        if name == "classify":
            s.add_argument("--label-key", default="label", help="the metadata key that votes")

    d = sub.add_parser("delete", help="delete an item (or all windows of a clip id)")
    d.add_argument("id")

    j = sub.add_parser("jobs", help="list background jobs, newest first")
    j.add_argument("--state", choices=["queued", "running", "done", "failed", "cancelled"])
    j.add_argument("--offset", type=int, default=0)
    j.add_argument("--limit", type=int, default=100)
    one = sub.add_parser("job", help="show a background job")
    one.add_argument("id")
    one.add_argument("--wait", action="store_true", help="follow it to the end (progress bar)")
    c = sub.add_parser("cancel", help="cancel a queued or running job")
    c.add_argument("id")

    ls = sub.add_parser("list", help="list stored items in id order")
    ls.add_argument("--offset", type=int, default=0, help="skip this many (small jumps)")
    ls.add_argument("--limit", type=int, default=100, help="items per page")
    ls.add_argument("--clip-id", help="only this clip's windows")
    ls.add_argument("--after", help="start after this id (a page's next)")
    ls.add_argument(
        "--all",
        action="store_true",
        help="walk every item by cursor, --limit per request, one JSON object a line",
    )
    return p


def progress_bar(job: Job, stream: Any = None) -> None:
    """One line per state read: a bar, the fraction, seconds and windows done (rewritten in
    place on a terminal)."""
    stream = stream or sys.stderr
    p = job.progress
    width = 30
    filled = int(round(p.fraction * width))
    total_s = f"/{p.seconds_total:.0f}" if p.seconds_total else ""
    total_w = f"/{p.windows_total}" if p.windows_total else ""
    line = (
        f"[{'#' * filled}{'.' * (width - filled)}] {p.fraction:4.0%} {p.seconds_done:.0f}"
        f"{total_s} s, {p.windows_done}{total_w} windows, {job.state}"
    )
    if stream.isatty():
        stream.write("\r" + line + ("\n" if job.finished else ""))
    else:
        stream.write(line + "\n")
    stream.flush()


def _long_for_the_server(client: PemtClient, path: Path) -> bool:
    """Is the file longer than the server takes synchronously? (Unknown: no.)"""
    try:
        from pemt.media import probe

        duration = probe(path).duration
        limit = client.info()["config"].get("embed_max_duration_s")
    except Exception:  # noqa: BLE001 - no PyAV, an odd file, an old server: let /embed decide
        return False
    return duration is not None and limit is not None and duration > float(limit)


def _embed_job(args: argparse.Namespace, client: PemtClient) -> Any:
    job = client.submit(
        args.file, id=args.id, metadata=args.metadata, window=args.window, stride=args.stride
    )
    if args.no_wait:
        return {"job": dataclasses.asdict(job)}
    job = client.wait(job.id, progress=progress_bar)
    if job.state != "done":
        err = job.error or {}
        raise PemtError(0, err.get("code", job.state), err.get("message", f"job {job.state}"))
    return {"job": dataclasses.asdict(job)}


def _run(args: argparse.Namespace, client: PemtClient) -> Any:
    if args.command == "embed":
        use_job = args.job or (
            not args.no_job and not args.no_store and _long_for_the_server(client, args.file)
        )
        if use_job:
            return _embed_job(args, client)
        try:
            res = client.embed(
                args.file,
                id=args.id,
                metadata=args.metadata,
                store=not args.no_store,
                window=args.window,
                stride=args.stride,
            )
        except PemtError as e:
            if e.status == 413 and e.code == "too_long" and not (args.no_job or args.no_store):
                return _embed_job(args, client)  # the server says: a job
            raise
        out = dataclasses.asdict(res)
        if not args.vectors:
            for item in out["items"]:
                item.pop("embedding")
        return out
    if args.command == "jobs":
        return dataclasses.asdict(client.jobs(args.offset, args.limit, state=args.state))
    if args.command == "job":
        if args.wait:
            return dataclasses.asdict(client.wait(args.id, progress=progress_bar))
        return dataclasses.asdict(client.job(args.id))
    if args.command == "cancel":
        return dataclasses.asdict(client.cancel(args.id))
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
    if args.command == "list" and args.all:
        if args.offset:
            raise ValueError("--all walks by cursor: use --after ID to start later, not --offset")
        walk = client.iter_clips(clip_id=args.clip_id, page_size=args.limit, after=args.after)
        for item in walk:  # streamed: flat memory however many items
            sys.stdout.write(json.dumps(dataclasses.asdict(item)) + "\n")
        return None
    if args.command == "list":
        page = client.list(args.offset, args.limit, clip_id=args.clip_id, after=args.after)
        return dataclasses.asdict(page)
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
    if out is not None:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
