"""Command line of celestial-data: check, prepare and synthesise image datasets."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from celestial_data.command import counted, run_command, say
from celestial_data.errors import DataError
from celestial_data.synth import BODIES, SynthParams

PROG = "celestial-data"


SYNTH = SynthParams()


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``celestial-data``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="report on a raw dataset folder; exit 1 if it has errors",
        description="Read every image of RAW (laid out as RAW/<ClassName>/<images>) and "
        "print its classes, counts, sizes, modes and problems. Exits 1 if it has errors.",
    )
    check.add_argument("raw", type=Path, metavar="RAW", help="the raw dataset folder")
    check.add_argument(
        "--params",
        type=Path,
        help="params.yaml whose prepare.on_corrupt decides if unreadable images are errors",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(run=_check)

    prepare = commands.add_parser(
        "prepare",
        help="check, split and write a raw dataset in the prepared format",
        description="Check RAW, split it by content hash and write OUT: per-split uint8 "
        ".npy arrays, labels, dataset.json, manifest.csv, report.json and preview.png.",
    )
    prepare.add_argument("raw", type=Path, metavar="RAW", help="the raw dataset folder")
    prepare.add_argument("out", type=Path, metavar="OUT", help="the output folder")
    prepare.add_argument(
        "--params", type=Path, help="params.yaml to read the 'prepare' section from"
    )
    prepare.set_defaults(run=_prepare)

    synth = commands.add_parser(
        "synth",
        help="render a synthetic dataset of the 10 bodies",
        description="Render OUT/<Class>/<Class>_<i>.jpg: procedural images of the 10 "
        "bodies of the reference dataset, deterministic per seed.",
    )
    synth.add_argument("out", type=Path, metavar="OUT", help="the output folder")
    synth.add_argument(
        "--per-class", type=int, help=f"images per class (default: {SYNTH.per_class})"
    )
    synth.add_argument(
        "--size", type=int, help=f"side of the square images in pixels (default: {SYNTH.size})"
    )
    synth.add_argument("--seed", type=int, help=f"random seed (default: {SYNTH.seed})")
    synth.add_argument(
        "--variation",
        type=float,
        help="how far pictures stray from the usual view, 0 to 1: exposure, size, position "
        f"and colour, in proportion (default: {SYNTH.variation:g})",
    )
    synth.add_argument(
        "--classes",
        nargs="+",
        metavar="CLASS",
        help=f"bodies to render (default: all of {', '.join(BODIES)})",
    )
    synth.add_argument(
        "--params", type=Path, help="params.yaml whose 'synth' section gives the defaults"
    )
    synth.set_defaults(run=_synth)
    return parser


def _check(args: argparse.Namespace) -> int:
    import json

    from celestial_data.check import check_dataset, format_report
    from celestial_data.prepare import PrepareParams

    params = PrepareParams.load(args.params)
    report = check_dataset(args.raw, on_corrupt=params.on_corrupt, view=params.view)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report, args.raw))
    if not report.ok:
        if args.json:  # standard output is for programs: the errors go to the reader
            say(PROG, "error", " ".join(report.errors))
        else:  # listed in the report just printed, not twice
            found = counted(len(report.errors), "error")
            them = "it" if len(report.errors) == 1 else "them"
            say(PROG, "error", f"{args.raw} has {found}, listed above. Fix {them} and check again.")
        return 1
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from celestial_data.prepare import PrepareParams, prepare_dataset

    params = PrepareParams.load(args.params)
    start = time.perf_counter()
    result = prepare_dataset(args.raw, args.out, params)
    seconds = time.perf_counter() - start
    for warning in result.report.warnings:
        say(PROG, "warning", warning)
    splits = ", ".join(f"{split} {n}" for split, n in result.dataset.splits.items())
    print(
        f"Prepared {result.report.total} images of {len(result.dataset.classes)} classes "
        f"into {args.out} ({splits}) in {seconds:.1f} s."
    )
    return 0


def _synth(args: argparse.Namespace) -> int:
    from celestial_data.synth import synthesize

    given = {key: getattr(args, key) for key in ("per_class", "size", "seed", "variation")}
    overrides = {key: value for key, value in given.items() if value is not None}
    params = SynthParams.load(args.params)
    if overrides:  # the command's flags take precedence over the file
        params = SynthParams.parse({**params.dump(), **overrides}, f"{PROG} synth")
    start = time.perf_counter()
    paths = synthesize(args.out, params, classes=args.classes)
    seconds = time.perf_counter() - start
    print(f"Rendered {len(paths)} images into {args.out} in {seconds:.1f} s.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    return run_command(build_parser(), argv, (DataError,))
