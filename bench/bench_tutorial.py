"""Time the tutorial's TensorFlow pipeline beside celestial's reference project.

The baseline the product is measured against: "A guide to MLOps"'s pipeline
(prepare -> train -> evaluate, TensorFlow, rewritten from its documentation in
``bench/tutorial/``) and the planets-moons project, each in a fresh repository
of its own on the reference images, reproduced with the same ``dvc`` in
alternation, so that both see the same load:

- ``dvc repro -f`` of the tutorial: a new process per stage, TensorFlow
  imported from compiled bytecode, as the guide runs it;
- ``dvc repro -f`` of planets-moons, rejection stage included: once with an
  empty compilation cache (a machine's first run) and once with the programs
  cached by the runs before (every later run).

A first run of each, not timed, hashes the raw images into DVC's state and
writes the bytecode, so the timed runs compare pipelines, not first hashing.
The tutorial's dependencies (TensorFlow, Matplotlib, PyYAML) are installed
with uv in a virtual environment of their own (``--venv``, reused when
present); that needs the package index once.

    python bench/bench_tutorial.py --out bench/results/tutorial.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_repro import (
    CACHE_ENV,
    ENV,
    REFERENCE,
    ROOT,
    commit,
    copy_project,
    init_repo,
    machine,
)

TUTORIAL = ROOT / "bench" / "tutorial"
VENV = Path(tempfile.gettempdir()) / "celestial-tutorial-venv"
REQUIREMENTS = ("tensorflow-cpu", "matplotlib", "pyyaml")


def tutorial_python(venv: Path) -> Path | None:
    """The tutorial's interpreter, installing its dependencies on first use; None if it cannot."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import tensorflow, matplotlib, yaml"]
    if python.is_file() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    pip = ["uv", "pip", "install", "-q", "--python", str(python), "--compile-bytecode"]
    install = (["uv", "venv", "-q", str(venv), "--python", "3.11"], [*pip, *REQUIREMENTS])
    for command in install:
        if subprocess.run(command, env=env, capture_output=True).returncode != 0:
            return None
    return python


def timed(project: Path, env: dict[str, str]) -> float:
    """Wall time of a forced ``dvc repro`` in ``project``."""
    start = time.perf_counter()
    done = subprocess.run(["dvc", "repro", "-f"], cwd=project, env=env, capture_output=True)
    if done.returncode != 0:
        sys.exit(f"dvc repro -f failed in {project}:\n{done.stdout.decode()[-2000:]}")
    return time.perf_counter() - start


def summary(times: list[float]) -> dict:
    return {"median": round(statistics.median(times), 2), "runs": [round(t, 2) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (median)")
    parser.add_argument("--venv", type=Path, default=VENV, help="the tutorial's environment")
    args = parser.parse_args()
    if not REFERENCE.is_dir():
        raise SystemExit(f"bench_tutorial: reference images not found at {REFERENCE}")
    python = tutorial_python(args.venv)
    if python is None:
        reason = f"could not install {', '.join(REQUIREMENTS)} into {args.venv} (package index?)"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"skipped": reason}, indent=2) + "\n")
        print(f"bench_tutorial: skipped: {reason}")
        return
    tutorial_env = {**ENV, "PATH": f"{python.parent}{os.pathsep}{ENV['PATH']}"}

    with tempfile.TemporaryDirectory(prefix="bench-tutorial-") as tmp:
        tutorial = Path(tmp) / "tutorial"
        shutil.copytree(TUTORIAL, tutorial, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REFERENCE, tutorial / "data" / "raw")
        init_repo(tutorial)
        commit(tutorial, "tutorial")
        celestial_root = Path(tmp) / "celestial"
        celestial_root.mkdir()
        init_repo(celestial_root)
        project = copy_project("planets-moons", celestial_root)
        assert project is not None  # the reference images are there
        commit(celestial_root, "planets-moons")
        cache = Path(tmp) / "compilation-cache"
        cached_env = {**ENV, CACHE_ENV: str(cache)}
        timed(tutorial, tutorial_env)  # hashes, bytecode
        timed(project, cached_env)  # hashes, fills the compilation cache
        runs: dict[str, list[float]] = {"tutorial": [], "cold": [], "cached": []}
        for _ in range(args.repeats):
            runs["tutorial"].append(timed(tutorial, tutorial_env))
            with tempfile.TemporaryDirectory(prefix="bench-xla-") as empty:
                runs["cold"].append(timed(project, {**ENV, CACHE_ENV: empty}))
            runs["cached"].append(timed(project, cached_env))
        tutorial_metrics = json.loads((tutorial / "evaluation" / "metrics.json").read_text())
        metrics = json.loads((project / "evaluation" / "metrics.json").read_text())
        rejection = json.loads((project / "evaluation" / "rejection.json").read_text())

    tutorial_s = statistics.median(runs["tutorial"])
    figures = {
        "machine": machine(),
        "repeats": args.repeats,
        "tutorial": {
            "forced_repro_s": summary(runs["tutorial"]),
            "val_accuracy": round(tutorial_metrics["val_acc"], 4),
            "tensorflow": subprocess.run(
                [str(python), "-c", "import tensorflow; print(tensorflow.__version__)"],
                capture_output=True,
                text=True,
            ).stdout.strip(),
        },
        "planets_moons": {
            "forced_repro_cold_s": summary(runs["cold"]),
            "forced_repro_cached_s": summary(runs["cached"]),
            "test_accuracy": metrics["accuracy"],
            "rejection_auroc": rejection["auroc"],
        },
        "cold_over_tutorial": round(statistics.median(runs["cold"]) / tutorial_s, 3),
        "cached_over_tutorial": round(statistics.median(runs["cached"]) / tutorial_s, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
