"""`pemt-server`: operator commands for a service's data directory (``PEMT_DATA_DIR``).

    pemt-server index check DATA_DIR [--full]          what start-up would find (read-only)
    pemt-server index backup DATA_DIR OUT [--no-media] consistent copy, while the service runs
    pemt-server index restore BACKUP DATA_DIR [--no-media]   service stopped
    pemt-server index accept DATA_DIR                  service stopped: serve the database as
                                                       it is after a detected loss (the lost
                                                       clips' videos are moved aside)

Output is JSON. Exit status 0 on success (``check``: the index is fine), 1 when the index has a
problem or the command failed (one line on stderr saying why), 2 for bad arguments. What each
command keeps and moves aside: docs/ARCHITECTURE.md, section "Index: damage and recovery".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"pemt-server: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pemt-server", description=(__doc__ or "").splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    index = sub.add_parser("index", help="check, back up and restore the index (and kept media)")
    isub = index.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=_Parser
    )

    c = isub.add_parser("check", help="verify the index as start-up would; changes nothing")
    c.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    c.add_argument("--full", action="store_true", help="PRAGMA integrity_check (slower)")

    b = isub.add_parser("backup", help="online, consistent backup into a new folder")
    b.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    b.add_argument("out", type=Path, metavar="OUT")
    b.add_argument("--no-media", action="store_true", help="leave the kept videos out")

    r = isub.add_parser("restore", help="replace the index (and media) with a backup")
    r.add_argument("backup", type=Path, metavar="BACKUP")
    r.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    r.add_argument("--no-media", action="store_true", help="do not copy the backup's videos")

    a = isub.add_parser("accept", help="accept the database as it is after a detected loss")
    a.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    return p


def _run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    from server.core.backup import accept_data_dir, backup_data_dir, restore_data_dir
    from server.index import check_index

    index_dir = args.data_dir / "index"
    if args.action == "check":
        report = check_index(index_dir, full=args.full)
        return (0 if report["ok"] else 1), report
    if args.action == "backup":
        manifest = backup_data_dir(args.data_dir, args.out, media=not args.no_media)
        media = manifest["media"]
        return 0, {  # the whole list of files is in OUT/backup.json
            "out": str(args.out),
            "created_at": manifest["created_at"],
            "index": manifest["index"],
            "media_files": len(media),
            "media_bytes": sum(f["bytes"] for f in media.values()),
            "media_missing": manifest["media_missing"],
        }
    if args.action == "restore":
        return 0, restore_data_dir(args.backup, args.data_dir, media=not args.no_media)
    if not (index_dir / "index.sqlite3").exists():
        raise FileNotFoundError(f"{index_dir} holds no index: is DATA_DIR the service's data dir?")
    return 0, accept_data_dir(args.data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    from server.index import IndexDamagedError, IndexLockedError

    args = build_parser().parse_args(argv)
    try:
        code, result = _run(args)
    except (IndexDamagedError, IndexLockedError, ValueError, OSError) as exc:
        print(f"pemt-server index {args.action}: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    if code and result.get("problem"):
        print(f"pemt-server index {args.action}: {result['problem']}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
