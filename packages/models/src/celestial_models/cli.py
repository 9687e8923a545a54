"""Command line of celestial-models."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``celestial-models``."""
    parser = argparse.ArgumentParser(prog="celestial-models", description=__doc__)
    parser.add_subparsers(dest="command", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    build_parser().parse_args(argv)
    return 0
