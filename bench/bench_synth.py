"""Benchmark `celestial-data synth`: how fast the bodies render.

Measures, in a fresh process:

- the one-off cost of building the ten surface maps (paid once per process);
- render throughput in memory, one thread, at 128 x 128 and 32 x 32, in
  images per second (all ten bodies in turn);
- end to end: `synthesize` writing JPEGs with every core, in images per second.

    python bench/bench_synth.py --out bench/results/synth.json
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


def render_rate(size: int, per_body: int) -> int:
    from celestial_data.synth import BODIES, render

    start = time.perf_counter()
    for index, body in enumerate(BODIES):
        for i in range(per_body):
            render(body, np.random.default_rng([0, index, i]), size)
    return round(len(BODIES) * per_body / (time.perf_counter() - start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=200, help="images per class, end to end")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (best kept)")
    args = parser.parse_args()

    from celestial_data.dataset import default_workers
    from celestial_data.synth import BODIES, SynthParams, build_surfaces, synthesize

    start = time.perf_counter()
    build_surfaces()
    surfaces = time.perf_counter() - start

    figures: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "workers": default_workers(),
            "platform": platform.platform(),
        },
        "surfaces_built_in_s": round(surfaces, 2),
        "render_images_per_s_1_thread": {
            "size_128": max(render_rate(128, 20) for _ in range(args.runs)),
            "size_32": max(render_rate(32, 40) for _ in range(args.runs)),
        },
    }
    images = args.per_class * len(BODIES)
    best = float("inf")
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        for _ in range(args.runs):
            start = time.perf_counter()
            synthesize(Path(tmp) / "raw", SynthParams(per_class=args.per_class))
            best = min(best, time.perf_counter() - start)
    figures["synthesize"] = {
        "images": images,
        "size": SynthParams().size,
        "seconds": round(best, 2),
        "images_per_s": round(images / best),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
