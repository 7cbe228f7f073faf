"""`pemt`: train, inspect and use PEMT models from the command line.

Each subcommand lives in its own module, which exposes
``register(subparsers)``; that function adds its parser and sets ``func`` (args -> exit code).
Errors the user can fix print one line and exit non-zero, without a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys

_COMMAND_MODULES = (
    "pemt.model.cli",  # params
    "pemt.embed_cli",  # embed
    "pemt.train.cli",  # shards, train
    "pemt.data.cli",  # data synth
    "pemt.triton_serve",  # triton serve
    "clients.bulk.cli",  # index bulk (Ray; imported only when run)
    "pemt.eval.cli",  # eval neardup
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pemt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that part of the project is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as e:  # MediaError and config errors are ValueErrors
        print(f"pemt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
