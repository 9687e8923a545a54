"""Benchmark `celestial-eval drift` on 10,000 logged predictions: target <= 5 s on 2 cores.

Writes a model folder (the bytes of a model file and a reference of 225
records, the size of the reference dataset's validation split) and a log of
synthetic answers of ten classes, shifted a little in every checked quantity
(some checks fail, as on a real drifted log). Then measures, each in a fresh
process as a CI job runs it:

- ``celestial-eval --help``;
- the whole ``celestial-eval drift`` command, process start included, wall
  time of each of --runs runs (the target is on the slowest);
- inside one run: the imports, reading the log and the reference, the checks
  and writing the two files.

    python bench/bench_drift.py --out bench/results/drift.json

Timings on a shared machine are noisy: compare runs made back to back.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLASSES = ("Earth", "Jupiter", "Mars", "Mercury", "Moon", "Neptune", "Pluto", "Saturn", "Sun",
           "Uranus")  # fmt: skip
TARGET_S = 5.0

# Child: time one drift step by step; prints one JSON line.
CHILD = """
import json, sys, time
laps, t = {}, time.perf_counter()
def lap(name):
    global t
    now = time.perf_counter(); laps[name] = round(now - t, 3); t = now
from celestial_eval import cli
from celestial_eval.drift import DriftParams, Sample, measure_drift, read_reference, run_drift
from celestial_eval.prediction_logs import read_log
lap("import_s")
model, reference, _ = read_reference(__import__("pathlib").Path(sys.argv[2]))
log = read_log([sys.argv[1]])
lap("read_s")
checks = measure_drift(Sample.of(reference), Sample.of(log.records), DriftParams())
lap("checks_s")
run_drift([sys.argv[1]], sys.argv[2], sys.argv[3])
lap("whole_run_drift_s")
print(json.dumps(laps))
"""


def records(count: int, seed: int, model: str, shift: float, logged: bool) -> list[str]:
    """``count`` JSON lines of answers; ``shift`` moves every checked quantity."""
    from celestial_models.prediction_log import PredictionRecord

    rng = np.random.default_rng(seed)
    mix = np.linspace(1.0, 1.0 + 2 * shift, len(CLASSES))
    closest = rng.choice(len(CLASSES), size=count, p=mix / mix.sum())
    rejected = rng.random(count) < 0.05 + shift
    confidence = np.clip(rng.beta(8 - 10 * shift, 1.5, count), 0.1, 1.0)
    scores = rng.gamma(4, 5, count) + np.where(rejected, 40, 0)
    features = np.clip(
        rng.normal([0.3 - shift, 0.25, 0.2, 0.2, 0.6], 0.05, (count, 5)), 0, 1
    ).round(6)
    lines = []
    for i in range(count):
        ranked = [closest[i], *(j for j in range(len(CLASSES)) if j != closest[i])][:5]
        rest = (1 - confidence[i]) / 4
        top_k = tuple(
            (CLASSES[j], round(float(confidence[i] if n == 0 else rest), 6))
            for n, j in enumerate(ranked)
        )
        lines.append(
            PredictionRecord(
                project="planets-moons" if logged else "",
                model=model,
                label="unknown" if rejected[i] else CLASSES[closest[i]],
                unknown=bool(rejected[i]),
                score=round(float(scores[i]), 6),
                top_k=top_k,
                features=tuple(features[i]),
                time=f"2026-12-{1 + i // 86400:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:"
                f"{i % 60:02d}.000000Z"
                if logged
                else None,
                digest=hashlib.sha256(str(i).encode()).hexdigest() if logged else None,
                latency_ms=2.5 if logged else None,
            ).to_json()
        )
    return lines


def wall(*command: str | Path, expect: int = 0) -> float:
    start = time.perf_counter()
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != expect:
        raise SystemExit(f"bench_drift: {command} exited {done.returncode}: {done.stderr}")
    return seconds


def main() -> None:
    """Run the benchmark and write its JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "drift.json")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5, help="runs of the whole command")
    args = parser.parse_args()
    cli = BIN / "celestial-eval"
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        model_dir = work / "model"
        model_dir.mkdir()
        (model_dir / "model.keras").write_bytes(b"bench model")
        model = hashlib.sha256(b"bench model").hexdigest()
        (model_dir / "reference.jsonl").write_text(
            "\n".join(records(225, 1, model, 0.0, logged=False)) + "\n"
        )
        log = work / "logs" / "predictions.jsonl"
        log.parent.mkdir()
        log.write_text("\n".join(records(args.records, 2, model, 0.1, logged=True)) + "\n")
        command = (cli, "drift", log.parent, "--model", model_dir, "--out", work / "out")
        help_s = min(wall(cli, "drift", "--help") for _ in range(3))
        runs = [wall(*command, expect=1) for _ in range(args.runs)]
        laps = json.loads(
            subprocess.run(
                [sys.executable, "-c", CHILD, log, model_dir, work / "out2"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.splitlines()[-1]
        )
        verdict = json.loads((work / "out" / "drift.json").read_text())
        figures = {
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "cpus_usable": len(os.sched_getaffinity(0)),
            },
            "records": args.records,
            "reference_records": verdict["reference"]["records"],
            "log_mib": round(log.stat().st_size / 2**20, 2),
            "checks": len(verdict["checks"]),
            "failed": verdict["failed"],
            "help_s": round(help_s, 3),
            "drift_command_s": [round(s, 3) for s in runs],
            "drift_command_worst_s": round(max(runs), 3),
            "target_s": TARGET_S,
            "within_target": max(runs) <= TARGET_S,
            "inside_one_run": laps,
            "html_kib": round((work / "out" / "drift.html").stat().st_size / 1024, 1),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(
        f"drift on {args.records} records: {min(runs):.2f}-{max(runs):.2f} s per command "
        f"(target {TARGET_S} s), --help {help_s:.2f} s; inside: {laps}"
    )


if __name__ == "__main__":
    main()
