"""Benchmark the unknown-image scores: which one tells unseen bodies from known ones.

On the reference images (1,500 JPEGs, 10 classes), prepared and trained with
projects/planets-moons/params.yaml:

- the full model: validation and test accuracy, the calibrated threshold and
  the share of test images it accepts, and the share of non-body images
  (blank, noise, square, smudge) it rejects;
- leave-one-class-out, for every class: a model trained without it, then for
  each score (mahalanobis, cosine, energy, msp) the AUROC separating that
  class's 150 images from the known classes' test images, and the share of
  them rejected at a threshold that accepts ``ood.acceptance`` of the
  validation images. Figures averaged over classes, and per class.

    python bench/bench_ood.py --out bench/results/ood.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from celestial_data.params import read_yaml

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "datasets" / "planets-moons" / "raw"
PARAMS = ROOT / "projects" / "planets-moons" / "params.yaml"


def main() -> None:
    """Run the benchmark and write its JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ood.json")
    parser.add_argument("--raw", type=Path, default=REFERENCE)
    parser.add_argument("--classes", nargs="*", help="classes to hold out (default: all)")
    args = parser.parse_args()
    if not args.raw.is_dir():
        raise SystemExit(f"bench_ood: reference images not found at {args.raw}")

    from celestial_data import PrepareParams, load_prepared, prepare_dataset
    from celestial_eval.leave_one_class_out import leave_one_class_out
    from celestial_eval.scoring import nonbody_rejection
    from celestial_models import TrainParams, load_classifier, train_model
    from celestial_models.ood import OodParams

    params = read_yaml(PARAMS.read_text())
    train_params = TrainParams.parse(params["train"])
    ood_params = OodParams.parse(params.get("ood"))
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared"
        prepare_dataset(args.raw, prepared, PrepareParams.parse(params["prepare"]))
        dataset = load_prepared(prepared)
        started = time.perf_counter()
        metadata = train_model(dataset, Path(scratch) / "model", train_params, ood=ood_params)
        classifier = load_classifier(Path(scratch) / "model")
        test_probabilities, test_scores = classifier.predict_with_score(dataset.images("test"))
        full = {
            "val_accuracy": metadata["val_accuracy"],
            "test_accuracy": float(
                np.mean(test_probabilities.argmax(axis=1) == dataset.labels("test"))
            ),
            "ood": metadata["ood"],
            "test_accepted": float(np.mean(~classifier.detector.unknown(test_scores))),
            "nonbody": nonbody_rejection(classifier),
            "train_and_fit_s": round(time.perf_counter() - started, 1),
        }
        started = time.perf_counter()
        loo = leave_one_class_out(
            dataset,
            train_params,
            ood_params,
            args.classes or "all",
            work_dir=scratch,
            detail=True,
            workers="auto",  # as the rejection stage: a process per core
        )
        loo["wall_s"] = round(time.perf_counter() - started, 1)

    figures = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "params": {key: params[key] for key in ("prepare", "train") if key in params}
        | {"ood": params.get("ood", "defaults")},
        "full_model": full,
        "leave_one_class_out": loo,
        "tutorial_msp_auroc": 0.88,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    by_score = loo["by_score"]
    for method, row in by_score.items():
        print(
            f"{method:12s} auroc {row['auroc']:.4f}  rejected {row['rejected']:.3f}  "
            f"accepted {row['accepted']:.3f}"
        )
    print(
        f"full model: val_accuracy {full['val_accuracy']:.4f} test_accuracy "
        f"{full['test_accuracy']:.4f} test_accepted {full['test_accepted']:.3f} "
        f"nonbody rejected {full['nonbody']['rate']:.3f}"
    )


if __name__ == "__main__":
    main()
