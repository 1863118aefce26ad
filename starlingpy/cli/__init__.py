"""`starlingpy` command line: a thin layer over the library.

Each subcommand lives in its own module exposing ``register(subparsers)``,
which adds its parser and sets ``func`` (args -> exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from starlingpy import __version__

SUBCOMMANDS = ("serve", "stats", "work", "failed", "supervise", "dashboard", "passwd", "store")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="starlingpy", description=__doc__.splitlines()[0])
    parser.add_argument("-V", "--version", action="version", version=f"starlingpy {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"starlingpy.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
