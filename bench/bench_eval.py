"""Benchmark `celestial-eval evaluate`: where the stage's time goes, and the report.

Prepares the reference images (1,500 JPEGs, 10 classes) and trains a small
model on them (neither timed), then measures, each in a fresh process as
`dvc repro` runs them:

- ``celestial-eval --help`` (must stay instant: no Keras, no matplotlib);
- the whole ``celestial-eval evaluate`` command, wall time, best of --runs;
- inside one evaluation: importing celestial_eval, ``load_classifier`` (the
  Keras import and model load), ``predict`` on the test split (JIT compile
  included), the matplotlib import, and each output written;
- ``celestial-eval report`` on the result, and the size of the page.

    python bench/bench_eval.py --out bench/results/eval.json

Timings on a shared machine are noisy: compare runs made back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "datasets" / "planets-moons" / "raw"
BIN = Path(sys.executable).parent

# Child: time one evaluation step by step; prints one JSON line.
EVAL_CHILD = """
import json, sys, time
import numpy as np
laps, t = {}, time.perf_counter()
def lap(name):
    global t
    now = time.perf_counter(); laps[name] = round(now - t, 3); t = now
from celestial_eval import evaluate as ev
from celestial_eval.history import read_history
from celestial_eval.scoring import predict
from celestial_data import load_prepared
lap("import_celestial_eval_s")
from celestial_models import load_classifier
classifier = load_classifier(sys.argv[1])
lap("load_classifier_s")
dataset = load_prepared(sys.argv[2])
split = ev.choose_split(dataset)
images = dataset.images(split)
probabilities = predict(classifier, images)
lap("predict_s")
import matplotlib.figure
lap("import_matplotlib_s")
from celestial_eval import confusion, history, preview
from celestial_eval.metrics import classification_metrics, confusion_matrix
actual = dataset.labels(split)
predicted = probabilities.argmax(axis=1)
classification_metrics(probabilities, actual, dataset.classes)
lap("metrics_s")
out = sys.argv[3]
confusion.draw_confusion(confusion_matrix(actual, predicted, len(dataset.classes)),
                         dataset.classes, out + "/confusion.png", "bench")
lap("confusion_png_s")
history.draw_history(read_history(sys.argv[1] + "/history.json"), out + "/history.png")
lap("history_png_s")
chosen = preview.select_preview(actual, predicted, probabilities.max(axis=1), 24)
preview.draw_preview(np.asarray(images[chosen]), actual[chosen], predicted[chosen],
                     probabilities.max(axis=1)[chosen], dataset.classes, out + "/preview.png")
lap("preview_png_s")
print(json.dumps({"images": len(actual), "split": split, **laps}))
"""


def wall(*command: str | Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(c) for c in command], check=True, capture_output=True)
    return time.perf_counter() - start


def total_seconds(laps: dict) -> float:
    return sum(v for v in laps.values() if isinstance(v, float))


def child(code: str, *args: str | Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        sys.exit(f"bench_eval: child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not REFERENCE.is_dir():
        sys.exit(f"bench_eval: reference images not found at {REFERENCE}")

    figures: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "image_size": args.image_size,
    }
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        work = Path(tmp)
        params = work / "params.yaml"
        params.write_text(
            yaml.safe_dump(
                {"prepare": {"image_size": args.image_size}, "train": {"epochs": args.epochs}}
            )
        )
        subprocess.run(
            [BIN / "celestial-data", "prepare", REFERENCE, work / "prepared", "--params", params],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [BIN / "celestial-models", "train", work / "prepared", work / "model",
             "--params", params],
            check=True,
            capture_output=True,
        )  # fmt: skip
        cli = BIN / "celestial-eval"
        figures["help_s"] = round(min(wall(cli, "evaluate", "--help") for _ in range(args.runs)), 3)
        out = work / "project" / "evaluation"
        command = [cli, "evaluate", work / "model", work / "prepared", out]
        figures["evaluate_command_s"] = round(min(wall(*command) for _ in range(args.runs)), 3)
        steps = [
            child(EVAL_CHILD, work / "model", work / "prepared", work) for _ in range(args.runs)
        ]
        figures["evaluate_steps"] = min(steps, key=total_seconds)
        figures["outputs_bytes"] = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
        figures["metrics"] = {
            k: json.loads((out / "metrics.json").read_text())[k] for k in ("split", "accuracy")
        }
        shutil.copy(params, work / "project" / "params.yaml")
        report = work / "report.html"
        figures["report_s"] = round(
            min(wall(cli, "report", work / "project", "-o", report) for _ in range(args.runs)), 3
        )
        figures["report_bytes"] = report.stat().st_size
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
