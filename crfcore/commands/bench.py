"""``crfcore bench NAME``: speed and memory of one component, with a peer run in the same command.

Each benchmark is a module ``crfcore.benchmarks.<name>`` with ``add_arguments(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

from .. import benchmarks


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed and memory against a peer, in one run",
                       description="Benchmarks: " + ", ".join(_names()) + ". Each compares against a peer "
                                   "measured in the same command.")
    bench_sub = p.add_subparsers(dest="bench", required=True, metavar="NAME")
    for name in _names():
        module = importlib.import_module(f"crfcore.benchmarks.{name}")
        bp = bench_sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(bp)
        bp.set_defaults(func=module.run)


def _names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))
