"""Benchmark `celestial-models train` on the reference dataset: accuracy and where time goes.

Prepares the reference images (1,500 JPEGs, 10 classes) with the prepare
params given (default: the recommended ones), then measures, each in a fresh
process as `dvc repro` runs them:

- the whole ``celestial-models train`` command (wall time, process start-up
  and imports included) with the default train params, first with an empty
  compilation cache (a machine's first run: every program compiled), then
  again with the programs that run left on disk (every later run);
- inside one training: the Keras import, the first epoch (which includes the
  JIT compilation of the training and inference steps) against the later
  ones, training throughput in images per second per epoch, the fit time, the
  save time, and the best validation accuracy;
- what evaluation pays: importing, `load_classifier` and `predict` on the
  validation split (compilation included), and its accuracy.

    python bench/bench_train.py --out bench/results/train.json
    python bench/bench_train.py --set epochs=8 --set batch_size=64 --image-size 24

Every other measurement starts with an empty compilation cache, so the first
epoch shows what compiling costs. Wall times on a shared machine are noisy
(the load average is recorded): CPU times, also recorded, move much less;
compare runs made back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from celestial_data.params import read_yaml

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "datasets" / "planets-moons" / "raw"

# Recommended prepare params for the reference dataset (see the package README).
PREPARE = {"image_size": 16, "color_mode": "rgb"}

# Child: time one training from inside the process; prints one JSON line.
FIT_CHILD = """
import json, sys, time
start, start_cpu = time.perf_counter(), time.process_time()
from celestial_models.backend import keras
imported, imported_cpu = time.perf_counter(), time.process_time()
import celestial_models.train as train
from celestial_models.params import TrainParams

class Clock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.begin, self.epochs = time.perf_counter(), []
        self.begin_cpu, self.epochs_cpu = time.process_time(), []
    def on_epoch_begin(self, epoch, logs=None):
        self.t, self.t_cpu = time.perf_counter(), time.process_time()
    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self.t)
        self.epochs_cpu.append(time.process_time() - self.t_cpu)
    def on_train_end(self, logs=None):
        self.end, self.end_cpu = time.perf_counter(), time.process_time()

clock = Clock()
prepared, model_dir, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
meta = train.train_model(prepared, model_dir, TrainParams.parse(params), callbacks=[clock])
done, done_cpu = time.perf_counter(), time.process_time()
print(json.dumps({
    "cpu_s": {
        "import_keras": imported_cpu - start_cpu,
        "before_fit": clock.begin_cpu - imported_cpu,
        "first_epoch": clock.epochs_cpu[0],
        "later_epochs": clock.epochs_cpu[1:],
        "after_fit": done_cpu - clock.end_cpu,
    },
    "import_keras_s": imported - start,
    "train_model_s": done - imported,
    "fit_s": clock.end - clock.begin,
    "before_fit_s": clock.begin - imported,
    "after_fit_s": done - clock.end,
    "epoch_s": clock.epochs,
    "epochs_run": meta["epochs_run"],
    "best_epoch": meta["best_epoch"],
    "val_accuracy": meta["val_accuracy"],
    "val_loss": meta["val_loss"],
}))
"""

# Child: what evaluation pays to load the model and predict; prints one JSON line.
PREDICT_CHILD = """
import json, sys, time
start = time.perf_counter()
from celestial_models import load_classifier
from celestial_data import load_prepared
classifier = load_classifier(sys.argv[1])
loaded = time.perf_counter()
dataset = load_prepared(sys.argv[2])
images, labels = dataset.images("val"), dataset.labels("val")
probabilities = classifier.predict(images)
predicted = time.perf_counter()
classifier.predict(images)
again = time.perf_counter()
print(json.dumps({
    "import_and_load_s": loaded - start,
    "predict_first_s": predicted - loaded,
    "predict_again_s": again - predicted,
    "val_accuracy": float((probabilities.argmax(1) == labels).mean()),
}))
"""


#: Where celestial-models keeps compiled programs (see celestial_models.backend).
CACHE_ENV = "CELESTIAL_COMPILATION_CACHE"


def with_cache(folder: Path | str) -> dict[str, str]:
    """The environment with the compilation cache in ``folder``."""
    return {**os.environ, CACHE_ENV: str(folder)}


def child(code: str, *args: str, cache: Path | str) -> dict:
    """Run ``code`` in a fresh interpreter and return the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        check=True,
        capture_output=True,
        text=True,
        env=with_cache(cache),
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(command: list[str], cache: Path | str) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of a command, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=with_cache(cache))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def parse_value(text: str) -> object:
    """A ``--set`` value as DVC's YAML reads it (numbers, booleans, strings)."""
    return read_yaml(text)


def prepare(raw: Path, out: Path, image_size: int, color_mode: str) -> dict:
    """Prepare the reference dataset in ``out`` and return its split sizes and time."""
    from celestial_data.prepare import PrepareParams, prepare_dataset

    start = time.perf_counter()
    params = PrepareParams.parse({"image_size": image_size, "color_mode": color_mode})
    result = prepare_dataset(raw, out, params)
    return {"splits": result.dataset.splits, "in_process_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    parser.add_argument("--raw", type=Path, default=REFERENCE)
    parser.add_argument("--image-size", type=int, default=PREPARE["image_size"])
    parser.add_argument("--color-mode", default=PREPARE["color_mode"])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a train param"
    )
    args = parser.parse_args()
    if not args.raw.is_dir():
        sys.exit(f"Reference dataset not found at {args.raw}.")
    params = {}
    for item in args.set:
        key, _, value = item.partition("=")
        params[key] = parse_value(value)

    from celestial_models.params import TrainParams

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        prepared = work / "prepared"
        data = prepare(args.raw, prepared, args.image_size, args.color_mode)
        params_file = work / "params.yaml"
        params_file.write_text(yaml.safe_dump({"train": params}))
        command = [
            str(Path(sys.executable).parent / "celestial-models"),
            "train",
            str(prepared),
            str(work / "model"),
            "--params",
            str(params_file),
            "--live-dir",
            str(work / "live"),
        ]
        runs = []
        for repeat in range(args.repeats):
            caches = [work / f"cache-{repeat}-{name}" for name in ("command", "fit", "predict")]
            command_s, command_cpu_s = timed(command, caches[0])
            cached_s, cached_cpu_s = timed(command, caches[0])
            fit_args = (str(prepared), str(work / "fit"), json.dumps(params))
            fit = child(FIT_CHILD, *fit_args, cache=caches[1])
            predict = child(PREDICT_CHILD, str(work / "model"), str(prepared), cache=caches[2])
            runs.append(
                {
                    "train_command_s": command_s,
                    "train_command_cpu_s": command_cpu_s,
                    "train_command_cached_s": cached_s,
                    "train_command_cached_cpu_s": cached_cpu_s,
                    "fit": fit,
                    "predict": predict,
                }
            )
            print(json.dumps(runs[-1]), flush=True)

    def median(get):
        return round(statistics.median(get(run) for run in runs), 3)

    fits = [run["fit"] for run in runs]
    later = [s for fit in fits for s in fit["epoch_s"][1:]]
    images_per_epoch = (
        -(-data["splits"]["train"] // TrainParams.parse(params).batch_size)
        * TrainParams.parse(params).batch_size
    )
    steady = statistics.median(later) if later else None
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "dataset": {"raw": "planets-moons", **data},
        "prepare_params": {"image_size": args.image_size, "color_mode": args.color_mode},
        "train_params": TrainParams.parse(params).dump(),
        "repeats": args.repeats,
        "val_accuracy": [fit["val_accuracy"] for fit in fits],
        "eval_val_accuracy": [run["predict"]["val_accuracy"] for run in runs],
        "epochs_run": [fit["epochs_run"] for fit in fits],
        "median_s": {
            "train_command": median(lambda r: r["train_command_s"]),
            "train_command_cached": median(lambda r: r["train_command_cached_s"]),
            "import_keras": median(lambda r: r["fit"]["import_keras_s"]),
            "train_model": median(lambda r: r["fit"]["train_model_s"]),
            "before_fit": median(lambda r: r["fit"]["before_fit_s"]),
            "fit": median(lambda r: r["fit"]["fit_s"]),
            "first_epoch": median(lambda r: r["fit"]["epoch_s"][0]),
            "later_epoch": round(steady, 3) if steady else None,
            "compile_estimate": median(
                lambda r: r["fit"]["epoch_s"][0] - statistics.median(r["fit"]["epoch_s"][1:])
            ),
            "after_fit_save": median(lambda r: r["fit"]["after_fit_s"]),
            "eval_import_and_load": median(lambda r: r["predict"]["import_and_load_s"]),
            "eval_predict_first": median(lambda r: r["predict"]["predict_first_s"]),
            "eval_predict_again": median(lambda r: r["predict"]["predict_again_s"]),
        },
        # CPU seconds are far less disturbed than wall seconds by other work on the machine.
        "median_cpu_s": {
            "train_command": median(lambda r: r["train_command_cpu_s"]),
            "train_command_cached": median(lambda r: r["train_command_cached_cpu_s"]),
            "import_keras": median(lambda r: r["fit"]["cpu_s"]["import_keras"]),
            "before_fit": median(lambda r: r["fit"]["cpu_s"]["before_fit"]),
            "first_epoch": median(lambda r: r["fit"]["cpu_s"]["first_epoch"]),
            "later_epoch": median(lambda r: statistics.median(r["fit"]["cpu_s"]["later_epochs"])),
            "after_fit_save": median(lambda r: r["fit"]["cpu_s"]["after_fit"]),
        },
        "train_images_per_s": round(images_per_epoch / steady, 1) if steady else None,
        "load_average_at_end": os.getloadavg(),
        "runs": runs,
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
