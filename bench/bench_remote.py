"""Benchmark `dvc push` and `dvc pull` of the reference dataset through a local S3 server.

Starts ``moto_server`` on 127.0.0.1 (as ``nox -s s3`` does: credentials
checked), makes a scratch git + DVC repository, copies the reference images
(1,500 JPEGs, 10 classes) into ``data/raw`` and ``dvc add``s them (timed
apart). Then, --runs times, each run against a fresh prefix of the bucket:

- ``dvc push`` to an empty remote;
- ``dvc push`` again, with nothing to send (the existence checks alone);
- ``dvc pull`` after removing the cache and ``data/raw``, then a check that
  every pulled file is byte-identical to the reference.

Each command is a fresh ``dvc`` process with DVC's default number of jobs, as
a user runs it; the figures include DVC's start-up.

    python bench/bench_remote.py --out bench/results/remote.json

Timings on a shared machine are noisy: compare runs made back to back.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "datasets" / "planets-moons" / "raw"
BUCKET = "celestial-bench"
ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
}


def load_locals3():
    # tools/ holds scripts, not a package; locals3 imports its sibling dvcrepo.
    sys.path.insert(0, str(ROOT / "tools"))
    import locals3

    return locals3


def dvc(*args: str, cwd: Path) -> float:
    """Run one dvc command; its wall time in seconds."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=ENV
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"bench_remote: dvc {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return elapsed


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_config(repo: Path, prefix: str, endpoint: str, key: str, secret: str) -> None:
    """What ``dvc remote add -d`` and ``dvc remote modify --local`` write."""
    (repo / ".dvc" / "config").write_text(
        f"[core]\n    remote = storage\n['remote \"storage\"']\n    url = s3://{BUCKET}/{prefix}\n"
    )
    (repo / ".dvc" / "config.local").write_text(
        f"['remote \"storage\"']\n    endpointurl = {endpoint}\n"
        f"    access_key_id = {key}\n    secret_access_key = {secret}\n"
    )


def summary(values: list[float]) -> dict[str, float | list[float]]:
    return {
        "best": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "runs": [round(v, 3) for v in values],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not REFERENCE.is_dir():
        sys.exit(f"bench_remote: the reference images were expected in {REFERENCE}; not found.")

    locals3 = load_locals3()
    reference = digests(REFERENCE)
    size = sum(p.stat().st_size for p in REFERENCE.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        scratch = Path(tmp)
        server = locals3.launch(scratch / "moto.log")
        try:
            endpoint = f"http://127.0.0.1:{locals3.port_of(server)}"
            key, secret = locals3.provision(endpoint, BUCKET)
            repo = scratch / "repo"
            repo.mkdir()
            subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
            dvc("init", "-q", cwd=repo)
            shutil.copytree(REFERENCE, repo / "data" / "raw")
            add_s = dvc("add", "-q", "data/raw", cwd=repo)
            push, noop, pull = [], [], []
            for run in range(args.runs):
                write_config(repo, f"run-{run}", endpoint, key, secret)
                push.append(dvc("push", cwd=repo))
                noop.append(dvc("push", cwd=repo))
                shutil.rmtree(repo / ".dvc" / "cache")
                shutil.rmtree(repo / "data" / "raw")
                pull.append(dvc("pull", cwd=repo))
                if digests(repo / "data" / "raw") != reference:
                    sys.exit("bench_remote: the pulled images differ from the reference.")
                # The pull refilled the cache: the next run pushes from it.
        finally:
            locals3.kill_group(server.pid)
            server.wait()

    objects = len(reference) + 1  # the images and the directory listing
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        },
        "server": "moto_server on 127.0.0.1, credentials checked",
        "dataset": {"files": len(reference), "bytes": size, "objects": objects},
        "jobs": "DVC default (4 x cpus)",
        "dvc_add_s": round(add_s, 3),
        "push_s": summary(push),
        "push_nothing_to_send_s": summary(noop),
        "pull_s": summary(pull),
        "push_files_per_s": round(objects / min(push)),
        "pull_files_per_s": round(objects / min(pull)),
        "push_mib_per_s": round(size / 2**20 / min(push), 2),
        "pull_mib_per_s": round(size / 2**20 / min(pull), 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
