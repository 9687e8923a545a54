"""Benchmark `celestial-data prepare`: throughput and peak memory.

Measures, each in a fresh process so peak memory is its own:

- the ceilings: Pillow decode + bilinear resize of the reference images,
  plain (what prepare does) and with JPEG draft mode, on one thread and on
  every core, in images per second;
- prepare on the reference dataset (1,500 JPEGs, 128 x 128) at the default
  params, in images per second, with the process's peak resident memory and
  its growth over the memory held before prepare started;
- the same on a synthetic dataset of 20,000 images (rendered once into a
  temporary folder), to show that memory does not grow with the dataset.

    python bench/bench_prepare.py --out bench/results/prepare.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "datasets" / "planets-moons" / "raw"

# Run in a child process: prints one JSON line.
PREPARE_CHILD = """
import json, sys, time
from celestial_data.prepare import prepare_dataset

def memory(key):  # MiB; VmHWM is this process's peak (ru_maxrss survives exec)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

raw, out = sys.argv[1], sys.argv[2]
before = memory("VmRSS")
start = time.perf_counter()
result = prepare_dataset(raw, out)
seconds = time.perf_counter() - start
print(json.dumps({
    "images": result.report.total,
    "seconds": seconds,
    "before_mib": before,
    "peak_mib": memory("VmHWM"),
    "splits": result.dataset.splits,
}))
"""

CEILING_CHILD = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from PIL import Image
size, workers, draft = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "draft"
files = sorted(Path(sys.argv[1]).glob("*/*"))
def load(path):
    with Image.open(path) as image:
        if draft:
            image.draft("RGB", (size, size))
        return image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
for path in files[:50]:
    load(path)
start = time.perf_counter()
with ThreadPoolExecutor(workers) as pool:
    for _ in pool.map(load, files):
        pass
print(json.dumps({"images": len(files), "seconds": time.perf_counter() - start}))
"""


def child(code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if done.returncode:
        sys.exit(f"bench_prepare: child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_of(runs: int, code: str, *args: str) -> dict:
    """The fastest of ``runs`` runs (noise on a shared machine only slows)."""
    results = [child(code, *args) for _ in range(runs)]
    return min(results, key=lambda r: r["seconds"])


def prepare_figures(raw: Path, work: Path, runs: int) -> dict:
    result = best_of(runs, PREPARE_CHILD, str(raw), str(work / "prepared"))
    return {
        "images": result["images"],
        "seconds": round(result["seconds"], 3),
        "images_per_s": round(result["images"] / result["seconds"]),
        "peak_rss_mib": round(result["peak_mib"], 1),
        "rss_before_mib": round(result["before_mib"], 1),
        "rss_growth_mib": round(result["peak_mib"] - result["before_mib"], 1),
        "splits": result["splits"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--synthetic", type=int, default=20_000, help="synthetic images")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (best kept)")
    args = parser.parse_args()
    if not REFERENCE.is_dir():
        sys.exit(f"bench_prepare: reference images not found at {REFERENCE}")

    from celestial_data.dataset import default_workers
    from celestial_data.prepare import PrepareParams
    from celestial_data.synth import BODIES, SynthParams, synthesize

    workers = default_workers()
    defaults = PrepareParams()
    size = defaults.image_size
    figures: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "workers": workers,
            "platform": platform.platform(),
        },
        "params": defaults.dump(),
    }
    for kind in ("plain", "draft"):
        ceiling = {}
        for threads in sorted({1, workers}):
            run = best_of(args.runs, CEILING_CHILD, str(REFERENCE), str(size), str(threads), kind)
            ceiling[f"threads_{threads}"] = round(run["images"] / run["seconds"])
        figures[f"pillow_{kind}_decode_resize_images_per_s"] = ceiling

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        work = Path(tmp)
        figures["reference"] = prepare_figures(REFERENCE, work, args.runs)
        per_class = -(-args.synthetic // len(BODIES))
        start = time.perf_counter()
        synthesize(work / "synthetic", SynthParams(per_class=per_class, size=128, seed=0))
        rendered = time.perf_counter() - start
        synthetic = prepare_figures(work / "synthetic", work, max(1, args.runs - 1))
        synthetic["rendered_in_s"] = round(rendered, 1)
        figures["synthetic"] = synthetic
    for kind in ("plain", "draft"):
        best = max(figures[f"pillow_{kind}_decode_resize_images_per_s"].values())
        figures[f"prepare_vs_pillow_{kind}"] = round(figures["reference"]["images_per_s"] / best, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
