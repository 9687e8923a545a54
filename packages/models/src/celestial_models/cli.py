"""Command line of celestial-models: ``train PREPARED MODEL_DIR``, ``predict MODEL_DIR FOLDER``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from celestial_data.command import counted, run_command
from celestial_data.errors import DataError
from celestial_models.errors import ModelError
from celestial_models.ood import OodParams
from celestial_models.params import TrainParams

PROG = "celestial-models"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``celestial-models``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Train Keras classifiers on prepared datasets; predict folders."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train a classifier on a prepared dataset",
        description=(
            "Train a classifier on PREPARED (a 'celestial-data prepare' output) and write "
            "MODEL_DIR/model.keras, metadata.json and history.json, and the unknown-image "
            "calibration (ood.json, ood_*.npy). Params come from the 'train' and 'ood' "
            "sections of --params (defaults when omitted)."
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
    train.set_defaults(run=_train)
    predict = commands.add_parser(
        "predict",
        help="classify every image under a folder (or one image) into a CSV",
        description=(
            "Classify every image under FOLDER (or the image file FOLDER) with the model in "
            "MODEL_DIR and write one CSV row per image: file,label,probability,score,unknown. "
            "label is 'unknown' when the image is unlike every class (its score is above the "
            "model's threshold); "
            "probability is that of the closest class."
        ),
    )
    predict.add_argument("model_dir", metavar="MODEL_DIR", help="a trained model folder")
    predict.add_argument(
        "folder",
        metavar="FOLDER",
        help="folder of images (searched recursively), or one image file",
    )
    predict.add_argument(
        "-o", "--output", metavar="FILE", help="CSV file to write (default: standard output)"
    )
    predict.add_argument(
        "--no-reject",
        action="store_true",
        help="label every image with its closest class (the unknown column still flags them)",
    )
    predict.set_defaults(run=_predict)
    return parser


def _train(args: argparse.Namespace) -> int:
    # Read (and reject bad) params before paying for the Keras import.
    params = TrainParams.load(args.params)
    ood = OodParams.load(args.params)
    from celestial_models.train import train_model

    metadata = train_model(
        args.prepared, args.model_dir, params, live_dir=args.live_dir, ood=ood, verbose=True
    )
    print(
        f"Best epoch {metadata['best_epoch']} of {metadata['epochs_run']}: val_accuracy "
        f"{metadata['val_accuracy']:.4f}, val_loss {metadata['val_loss']:.4f}. "
        f"Model written to {args.model_dir}."
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from celestial_models.predict_folder import predict_folder

    reject = not args.no_reject
    # Warnings to the sys.stderr of now: predict_folder's default is that of its import.
    if args.output is None:
        counts = predict_folder(
            args.model_dir, args.folder, sys.stdout, reject=reject, warn=sys.stderr
        )
    else:
        with open(args.output, "w", newline="") as stream:
            counts = predict_folder(
                args.model_dir, args.folder, stream, reject=reject, warn=sys.stderr
            )
    sys.stdout.flush()  # the CSV before the summary when both go to a terminal
    print(
        f"{counted(counts['images'], 'image')} classified, {counts['unknown']} unknown, "
        f"{counts['skipped']} skipped (not readable images)"
        + (f"; written to {args.output}." if args.output else "."),
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    return run_command(build_parser(), argv, (ModelError, DataError))
