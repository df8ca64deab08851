"""The ``crfcore`` command line: ``refine``, ``eval``, ``bench`` and the other subcommands.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which sets ``func``); this file only
wires them together, sets up logging and turns failures into exit codes:

* 0 success; 1 a command's own partial failure (``batch``: some images failed);
* 2 an expected failure (:class:`~crfcore.errors.InputError`, a file-system error, a ``ValueError`` raised by one of
  crfcore's own checks, memory exhausted): one line ``crfcore COMMAND: error: MESSAGE``, no traceback;
* 70 (``EX_SOFTWARE``) anything else: a bug in crfcore, printed with its traceback and a line saying so;
* 130 Ctrl-C.

A subcommand whose module cannot be imported is never dropped silently: when an optional dependency is missing the
command is still listed and says what to install; any other import failure is raised (a bug).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from pathlib import Path
from types import TracebackType

from .errors import InputError

__all__ = ["main", "build_parser", "SUBCOMMANDS", "EXIT_ERROR", "EXIT_BUG"]

SUBCOMMANDS = (
    "crfcore.commands.refine",
    "crfcore.commands.evaluate",
    "crfcore.commands.bench",
    "crfcore.commands.unary",
    "crfcore.commands.tune",
    "crfcore.commands.export",
    "crfcore.commands.batch",
)

EXIT_ERROR = 2
"""Exit status of an expected failure (bad input, missing file), printed as one ``error:`` line."""

EXIT_BUG = 70
"""Exit status of an unexpected exception (a bug in crfcore), printed with its traceback."""

_PACKAGE = Path(__file__).resolve().parent


def _unavailable(sub: argparse._SubParsersAction, module: str, exc: ModuleNotFoundError) -> None:
    """Register ``crfcore NAME`` for a module that needs a package that is not installed: it says which."""
    name = module.rsplit(".", 1)[-1]
    command = {"evaluate": "eval"}.get(name, name)
    p = sub.add_parser(command, help=f"(unavailable: needs {exc.name})", add_help=False)

    def run(_: argparse.Namespace) -> int:
        raise InputError(f"this command needs the package {exc.name!r}, which is not installed ({exc}); install "
                         f"it (pip install {exc.name}) or the CRF Studio extra that provides it.")

    p.set_defaults(func=run, unavailable=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crfcore", description="Refine segmentation masks with CRFs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] == "crfcore":
                raise  # a crfcore module missing or misnamed: a bug, never a silently missing command
            _unavailable(sub, name, exc)
            continue
        module.add_parser(sub)
    return parser


def _raised_by_crfcore(tb: TracebackType | None) -> bool:
    """True when the innermost frame of ``tb`` is crfcore's own code: one of its checks raised, not a library."""
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and Path(last.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "unavailable", False):  # an unavailable command explains itself instead
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    prefix = f"crfcore {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except (InputError, OSError) as exc:
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print(f"{prefix}: error: out of memory; use a smaller image, fewer --jobs, or a machine with more memory.",
              file=sys.stderr)
        return EXIT_ERROR
    except ValueError as exc:
        if not _raised_by_crfcore(exc.__traceback__):
            return _bug(prefix)
        print(f"{prefix}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception:  # everything else is a bug: show where, and say so
        return _bug(prefix)


def _bug(prefix: str) -> int:
    traceback.print_exc()
    print(f"{prefix}: this is a bug in crfcore, not a problem with your input; please report it with the "
          f"traceback above.", file=sys.stderr)
    return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
