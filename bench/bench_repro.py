"""Benchmark the projects' pipelines: cold forced `dvc repro`, its stages, no-op repro.

Each project of ``projects/`` is copied, with the packages' sources it depends
on, into a fresh git + DVC repository in a temporary folder (planets-moons gets
the reference images from ``../shared/datasets/planets-moons/raw``), so the
workspace is left untouched. There, for each project:

- ``dvc repro -f`` is run ``--repeats`` times (every stage in a fresh process,
  as users run it) with an empty compilation cache (a machine's first run),
  and as many times with the cache those runs filled (every later run, the
  usual case: see ``celestial_models.backend``); the figures are the median
  wall time of the whole command and of each stage (from the moment DVC
  announces a stage to the next), the held-out accuracy of the result, and
  whether every run, cold or cached, wrote the same ``dvc.lock``;
- ``dvc repro -f evaluate`` (prepare, train and evaluate, without the
  leave-one-class-out rejection stage) is timed ``--repeats`` times;
- a no-op ``dvc repro`` (nothing changed) is timed ``--repeats`` times,
  alternating with a no-op ``dvc repro`` of a trivial one-stage pipeline in a
  repository of its own: DVC's floor, measured in the same minutes, so that
  the ratio between the two says what the project adds to DVC itself. A
  project with raw images is also timed against the floor of a one-stage
  pipeline over the same images (tracked with ``dvc add``, the stage's
  dependency): what is left is what its four stages add.

Then ``--many`` (20) copies of a small project made from the template are
laid out in one repository, as a team with many datasets would have them, and
three no-ops are timed alternately: one ``dvc repro --recursive`` over every
project's folder from the root (what ``nox -s repro`` runs), ``dvc repro`` in one
project's folder, and the trivial pipeline.

Finally ``nox -s repro`` is timed on the real workspace once it is up to date
(skip with ``--no-nox``, or time only that with ``--nox-only``), to show what
the session adds to DVC's own floor.

    python bench/bench_repro.py --out bench/results/repro.json

Timings on a shared machine are noisy: compare runs made back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
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
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@celestial.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@celestial.invalid",
}
STAGE = re.compile(r"^Running stage '([\w-]+)'")
#: Where the stages keep compiled programs (see celestial_models.backend).
CACHE_ENV = "CELESTIAL_COMPILATION_CACHE"


def machine() -> dict:
    """What a timing depends on: the platform, Python, the cores and the load."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        # Other work on the machine stretches every wall time: read them with this.
        "load_average_1m_at_start": os.getloadavg()[0],
    }


def run(*args: str, cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def copy_project(name: str, root: Path) -> Path | None:
    """Lay out ``root`` like the repository for one project; None if its data is missing."""
    source = ROOT / "projects" / name
    for package in ("data", "models", "eval"):
        target = root / "packages" / package / "src"
        if not target.exists():
            shutil.copytree(
                ROOT / "packages" / package / "src",
                target,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
    project = root / "projects" / name
    project.mkdir(parents=True)
    for file in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(source / file, project / file)
    if (source / "data" / "raw.dvc").is_file():
        if name != "planets-moons" or not REFERENCE.is_dir():
            return None
        shutil.copytree(REFERENCE, project / "data" / "raw")
        run("dvc", "add", "-q", "data/raw", cwd=project)
    return project


def timed_repro(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[float, dict[str, float]]:
    """Wall time of ``dvc repro ARGS`` and of each stage it ran."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["dvc", "repro", *args],
        cwd=project,
        env=env or ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    marks: list[tuple[str, float]] = []
    output = []
    for line in proc.stdout:
        output.append(line)
        found = STAGE.match(line)
        if found:
            marks.append((found.group(1), time.perf_counter()))
    if proc.wait() != 0:
        sys.exit(f"dvc repro {' '.join(args)} failed in {project}:\n{''.join(output)}")
    end = time.perf_counter()
    stages = {
        name: (marks[i + 1][1] if i + 1 < len(marks) else end) - began
        for i, (name, began) in enumerate(marks)
    }
    return end - start, stages


def init_repo(root: Path) -> None:
    """A fresh git + DVC repository at ``root``, ignoring what the workspace's ignores."""
    run("git", "init", "-q", cwd=root)
    run("dvc", "init", "-q", cwd=root)
    shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")


def commit(root: Path, message: str) -> None:
    run("git", "add", "-A", cwd=root)
    run("git", "commit", "-q", "-m", message, cwd=root)


def trivial_pipeline(root: Path, raw: Path | None = None) -> Path:
    """DVC's floor: a repository holding one stage that copies one file, reproduced once.

    With ``raw``, the floor of a pipeline over that data: the folder is
    tracked as a project's raw images are (``dvc add data/raw``) and the one
    stage depends on it, as ``prepare`` does; it only lists it.
    """
    init_repo(root)
    (root / "in.txt").write_text("floor\n")
    if raw is None:
        stage = "cmd: cp in.txt out.txt\n    deps: [in.txt]"
    else:
        shutil.copytree(raw, root / "data" / "raw")
        run("dvc", "add", "-q", "data/raw", cwd=root)
        stage = "cmd: ls data/raw > out.txt\n    deps: [data/raw]"
    (root / "dvc.yaml").write_text(f"stages:\n  copy:\n    {stage}\n    outs: [out.txt]\n")
    commit(root, "trivial pipeline")
    timed_repro(root)
    return root


def alternate(repeats: int, **commands: tuple[Path, tuple[str, ...]]) -> dict[str, list[float]]:
    """Time each no-op ``dvc repro`` in turn, ``repeats`` rounds, so load hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, (cwd, args) in commands.items():
            times[name].append(timed_repro(cwd, *args)[0])
    return times


def summary(times: list[float]) -> dict:
    return {"median": statistics.median(times), "runs": times}


def bench_many(count: int, root: Path, floor: Path, repeats: int) -> dict:
    """No-op costs with ``count`` template projects in one repository."""
    from cookiecutter.main import cookiecutter

    init_repo(root)
    for package in ("data", "models", "eval"):
        shutil.copytree(
            ROOT / "packages" / package / "src",
            root / "packages" / package / "src",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    projects = root / "projects"
    first = Path(
        cookiecutter(
            str(ROOT / "templates" / "project"),
            no_input=True,
            output_dir=str(projects),
            extra_context={
                "dataset_name": "Many 01",
                "data_source": "synthetic",
                "image_size": 16,
                "epochs": 1,
            },
        )
    )
    params = read_yaml((first / "params.yaml").read_text())
    params["synth"].update(per_class=6, size=32)
    params["rejection"]["classes"] = ["Earth"]
    (first / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(root, "one project")
    timed_repro(first)
    # The others are copies of the first, outputs and lock included: up to date.
    names = [f"many-{i:02d}" for i in range(1, count + 1)]
    first = first.rename(projects / names[0])
    for name in names[1:]:
        shutil.copytree(first, projects / name, symlinks=True)
    commit(root, f"{count} projects")
    # What nox -s repro runs (tools/dvcrepo.py): every project's folder as a target.
    targets = ("--keep-going", "--recursive", *(f"projects/{name}" for name in names))
    timed_repro(root, *targets)  # hashes the copies' outputs once
    times = alternate(
        repeats,
        all_projects=(root, targets),
        one_project=(projects / names[0], ()),
        floor=(floor, ()),
    )
    return {
        "projects": count,
        "noop_all_projects_s": summary(times["all_projects"]),
        "noop_one_project_s": summary(times["one_project"]),
        "noop_floor_s": summary(times["floor"]),
        "all_over_one_project": statistics.median(times["all_projects"])
        / statistics.median(times["one_project"]),
        "one_project_over_floor": statistics.median(times["one_project"])
        / statistics.median(times["floor"]),
    }


def bench_project(name: str, root: Path, floor: Path, repeats: int) -> dict:
    project = copy_project(name, root)
    if project is None:
        return {"skipped": f"its data is not available here (looked in {REFERENCE})"}
    commit(root, f"bench {name}")
    cache = root / "compilation-cache"
    cached_env = {**ENV, CACHE_ENV: str(cache)}
    totals: dict[str, list[float]] = {"cold": [], "cached": []}
    stage_times: dict[str, list[dict[str, float]]] = {"cold": [], "cached": []}
    locks = set()
    for repeat in range(repeats):
        # Cold: programs compiled as on a machine's first run, into an empty cache;
        # the first cold run fills the one the cached runs read.
        with tempfile.TemporaryDirectory(prefix="bench-xla-") as empty:
            cold_env = cached_env if repeat == 0 else {**ENV, CACHE_ENV: empty}
            runs = (("cold", cold_env), ("cached", cached_env))
            for kind, env in runs:
                total, stages = timed_repro(project, "-f", env=env)
                totals[kind].append(total)
                stage_times[kind].append(stages)
                locks.add((project / "dvc.lock").read_bytes())
    # The tutorial's pipeline is prepare -> train -> evaluate: time those alone too, as
    # the rejection stage (leave-one-class-out) only reruns when its own inputs change.
    to_evaluate = [
        timed_repro(project, "-f", "evaluate", env=cached_env)[0] for _ in range(repeats)
    ]
    with tempfile.TemporaryDirectory(prefix="bench-floor-data-") as data_floor_dir:
        raw = project / "data" / "raw"
        pipelines = {"project": (project, ()), "floor": (floor, ())}
        if raw.is_dir():
            pipelines["floor_same_data"] = (trivial_pipeline(Path(data_floor_dir), raw), ())
        noops = alternate(repeats, **pipelines)
    noop, floor_noop = noops["project"], noops["floor"]
    same_data = (
        {
            "noop_floor_same_data_s": summary(noops["floor_same_data"]),
            "noop_over_floor_same_data": statistics.median(noop)
            / statistics.median(noops["floor_same_data"]),
        }
        if "floor_same_data" in noops
        else {}
    )
    metrics = json.loads((project / "evaluation" / "metrics.json").read_text())
    metadata = json.loads((project / "model" / "metadata.json").read_text())
    params = read_yaml((project / "params.yaml").read_text())
    return {
        "forced_repro_s": summary(totals["cold"]),
        "forced_repro_cached_s": summary(totals["cached"]),
        "forced_repro_to_evaluate_cached_s": summary(to_evaluate),
        "stages_s": {
            kind: {stage: statistics.median(t[stage] for t in times) for stage in times[0]}
            for kind, times in stage_times.items()
        },
        "noop_repro_s": summary(noop),
        "noop_floor_s": summary(floor_noop),
        "noop_over_floor": statistics.median(noop) / statistics.median(floor_noop),
        **same_data,
        "lock_identical_across_runs": len(locks) == 1,
        "test_accuracy": metrics["accuracy"],
        "evaluated_split": metrics["split"],
        "evaluated_images": metrics["images"],
        "val_accuracy": metadata.get("val_accuracy"),
        "params": {k: params[k] for k in params if k in ("synth", "prepare", "train")},
    }


def bench_nox(repeats: int) -> dict:
    """Time ``nox -s repro`` on the workspace once a first run has brought it up to date."""
    command = [sys.executable, "-m", "nox", "-s", "repro", "--noxfile", str(ROOT / "noxfile.py")]
    first = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True)
    if first.returncode != 0:
        return {"skipped": f"nox -s repro failed: {first.stdout[-500:]}{first.stderr[-500:]}"}
    times, summary = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        summary = [line for line in done.stderr.splitlines() if line.startswith("nox >   ")]
    return {"noop_s": {"median": statistics.median(times), "runs": times}, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measure (median)")
    parser.add_argument("--no-nox", action="store_true", help="do not time nox -s repro")
    parser.add_argument(
        "--many", type=int, default=20, help="template projects in one repository (0: skip)"
    )
    parser.add_argument(
        "--nox-only", action="store_true", help="time nox -s repro only, keep the rest of --out"
    )
    args = parser.parse_args()
    if args.nox_only:
        results = json.loads(args.out.read_text()) if args.out.is_file() else {}
        results["nox_repro"] = bench_nox(args.repeats)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["nox_repro"], indent=2))
        return

    names = sorted(p.parent.name for p in (ROOT / "projects").glob("*/dvc.yaml"))
    results: dict = {
        "machine": machine(),
        "repeats": args.repeats,
        "projects": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as floor_dir:
        floor = trivial_pipeline(Path(floor_dir))
        for name in names:
            with tempfile.TemporaryDirectory(prefix="bench-repro-") as tmp:
                root = Path(tmp)
                init_repo(root)
                print(f"{name}: {args.repeats} forced repros...", flush=True)
                results["projects"][name] = bench_project(name, root, floor, args.repeats)
                print(json.dumps(results["projects"][name], indent=2), flush=True)
        if args.many:
            with tempfile.TemporaryDirectory(prefix="bench-many-") as tmp:
                print(f"{args.many} template projects: no-op repros...", flush=True)
                results["many_projects"] = bench_many(args.many, Path(tmp), floor, args.repeats)
                print(json.dumps(results["many_projects"], indent=2), flush=True)
    if not args.no_nox:
        results["nox_repro"] = bench_nox(args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
