"""The ``crfcore`` command line: ``refine``, ``eval``, ``bench`` and the other subcommands.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which sets ``func``); this file only
wires them together and sets up logging.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["main", "build_parser"]

SUBCOMMANDS = (
    "crfcore.commands.refine",
    "crfcore.commands.evaluate",
    "crfcore.commands.bench",
    "crfcore.commands.unary",
    "crfcore.commands.tune",
    "crfcore.commands.export",
    "crfcore.commands.batch",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crfcore", description="Refine segmentation masks with CRFs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:  # a module that fails to import is a broken install: say so, never drop the command
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"crfcore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"crfcore {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
