"""Command line of celestial-models: ``celestial-models train PREPARED MODEL_DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from celestial_data.errors import DataError
from celestial_data.errors import ParamsError as DataParamsError
from celestial_models.errors import ModelError

PROG = "celestial-models"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``celestial-models``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Train Keras classifiers on prepared datasets."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train a classifier on a prepared dataset",
        description=(
            "Train a classifier on PREPARED (a 'celestial-data prepare' output) and write "
            "MODEL_DIR/model.keras, metadata.json and history.json. Params come from the "
            "'train' section of --params (defaults when omitted)."
        ),
    )
    train.add_argument("prepared", metavar="PREPARED", help="prepared dataset folder")
    train.add_argument("model_dir", metavar="MODEL_DIR", help="output folder of the model")
    train.add_argument(
        "--params", metavar="FILE", help="params.yaml to read the 'train' section from"
    )
    train.add_argument(
        "--live-dir", metavar="DIR", help="folder for DVCLive's per-epoch metrics (dvc plots)"
    )
    return parser


def run_train(args: argparse.Namespace) -> None:
    """Run ``celestial-models train``."""
    from celestial_data.params import read_section

    # Read (and reject bad) params before paying for the Keras import.
    from celestial_models.params import DEFAULTS, resolve_params

    params = resolve_params(read_section(args.params, "train", DEFAULTS))
    from celestial_models.train import train_model

    metadata = train_model(
        args.prepared, args.model_dir, params, live_dir=args.live_dir, verbose=True
    )
    print(
        f"Best epoch {metadata['best_epoch']} of {metadata['epochs_run']}: val_accuracy "
        f"{metadata['val_accuracy']:.4f}, val_loss {metadata['val_loss']:.4f}. "
        f"Model written to {args.model_dir}."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        run_train(args)
    except DataParamsError as error:  # also celestial_models.ParamsError
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except (ModelError, DataError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    return 0
