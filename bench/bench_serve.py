"""Benchmark celestial-serve against the same model's in-process ceiling.

Measures, in one run on one machine:

- the ceiling: encoded image bytes -> probabilities in process (decode,
  preprocess, batched predict), in images per second;
- a real server on 127.0.0.1: start-up time until /health answers 200, latency
  p50/p95 and requests per second with 1 client, requests per second with 8
  concurrent clients, and the ratio of that to the ceiling;
- where a request's time goes (decode, predict at batch 1, the rest).

The model is the reference project's (projects/planets-moons/model) when it has
been trained, else a small one trained here on reference images (recorded in
the output as ``model.source``).

    python bench/bench_serve.py --out bench/results/serve.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

from celestial_serve.server import ServerOptions

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "datasets" / "planets-moons" / "raw"
PROJECT = ROOT / "projects" / "planets-moons"
OPTIONS = ServerOptions()  # the command's defaults
MAX_BATCH = OPTIONS.max_batch_size


def reference_files(per_class: int) -> list[Path]:
    if not REFERENCE.is_dir():
        sys.exit(f"bench_serve: reference images not found at {REFERENCE}")
    classes = sorted(p for p in REFERENCE.iterdir() if p.is_dir())
    return [path for c in classes for path in sorted(c.glob("*.jpg"))[:per_class]]


def train_fallback(root: Path) -> Path:
    """A project with a model trained briefly on reference images at the default size."""
    from celestial_data import decode, to_array, write_prepared
    from celestial_data.prepare import DEFAULTS as PREPARE
    from celestial_models import train_model

    size, mode = PREPARE["image_size"], PREPARE["color_mode"]
    files = reference_files(per_class=20)
    classes = sorted({p.parent.name for p in files})
    images = np.stack([to_array(decode(p, size), size, mode) for p in files])
    labels = np.array([classes.index(p.parent.name) for p in files])
    names = [f"{p.parent.name}/{p.name}" for p in files]
    prepared = write_prepared(
        root / "prepared",
        classes,
        mode,
        {"train": (images, labels, names), "val": (images, labels, names)},
    )
    project = root / "bench-bodies"
    train_model(prepared, project / "model", {"epochs": 1})
    return project


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def ceiling(model_dir: Path, payloads: list[bytes], rounds: int = 5) -> dict:
    """In-process images/s from encoded bytes to probabilities, batched like the server.

    Every figure is the median of ``rounds`` runs, as the machine may be shared.
    """
    from celestial_models import load_classifier

    classifier = load_classifier(model_dir)
    blank = np.zeros((MAX_BATCH, *classifier.input_shape), np.uint8)
    for size in (1, MAX_BATCH):
        classifier.predict(blank[:size])

    def end_to_end() -> None:
        for i in range(0, len(payloads), MAX_BATCH):
            chunk = payloads[i : i + MAX_BATCH]
            classifier.predict(np.stack([classifier.prepare(data) for data in chunk]))

    def median(fn, repeat: int) -> float:
        return statistics.median(timed(fn) for _ in range(rounds)) / repeat

    some = payloads[:256]
    return {
        "images_per_s": round(1 / median(end_to_end, len(payloads)), 1),
        "decode_ms_per_image": round(
            1000 * median(lambda: [classifier.prepare(d) for d in some], len(some)), 3
        ),
        "predict_ms_batch_1": round(
            1000 * median(lambda: [classifier.predict(blank[:1]) for _ in range(50)], 50), 3
        ),
        f"predict_ms_batch_{MAX_BATCH}": round(
            1000 * median(lambda: [classifier.predict(blank) for _ in range(20)], 20), 3
        ),
        "model_hash": classifier.model_hash,
        "input_shape": list(classifier.input_shape),
    }


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(project: Path, port: int, log: Path) -> tuple[subprocess.Popen, float]:
    """Start celestial-serve in its own process group; return it and seconds to healthy."""
    start = time.perf_counter()
    with open(log, "wb") as stream:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celestial_serve",
                str(project),
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--max-batch-size",
                str(MAX_BATCH),
            ],
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/health"
    while time.perf_counter() - start < 300:
        if process.poll() is not None:
            sys.exit(f"bench_serve: server exited:\n{log.read_text()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return process, time.perf_counter() - start
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    stop_server(process)
    sys.exit(f"bench_serve: server not healthy after 300 s:\n{log.read_text()}")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def group_cpu(pgid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by each process of a process group, with its role (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    usage = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(fields[2]) != pgid:  # field 5 of stat: process group
            continue
        if int(entry.name) == pgid:
            role = "main"
        elif "spawn_main" in cmdline:
            role = "inference worker"
        elif "resource_tracker" in cmdline:
            role = "resource tracker"
        else:
            role = "http server or queue manager"
        usage[int(entry.name)] = (role, (int(fields[11]) + int(fields[12])) / tick)
    return usage


def cpu_per_request(before: dict, after: dict, requests_total: int) -> list[dict]:
    """Milliseconds of CPU per request for each server process, busiest first."""
    rows = [
        {
            "role": role,
            "cpu_ms_per_request": round(1000 * (used - before[pid][1]) / requests_total, 3),
        }
        for pid, (role, used) in after.items()
        if pid in before
    ]
    return sorted(rows, key=lambda row: -row["cpu_ms_per_request"])


def load(url: str, payloads: list[bytes], clients: int, requests_total: int) -> dict:
    """Send ``requests_total`` raw-image requests from ``clients`` threads."""
    local = threading.local()
    latencies: list[float] = []

    def one(i: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        start = time.perf_counter()
        response = session.post(
            url,
            data=payloads[i % len(payloads)],
            headers={"Content-Type": "image/jpeg"},
            timeout=60,
        )
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(4 * clients)))  # warm connections and batch sizes
        latencies.clear()
        client_before = os.times()
        start = time.perf_counter()
        list(pool.map(one, range(requests_total)))
        elapsed = time.perf_counter() - start
        client_after = os.times()
    client_cpu = sum(client_after[:2]) - sum(client_before[:2])
    return {
        "clients": clients,
        "requests": requests_total,
        "requests_per_s": round(requests_total / elapsed, 1),
        "latency_ms_p50": round(1000 * percentile(latencies, 50), 2),
        "latency_ms_p95": round(1000 * percentile(latencies, 95), 2),
        "client_cpu_ms_per_request": round(1000 * client_cpu / requests_total, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--project", type=Path, help="project to serve (default: see above)")
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()

    payloads = [p.read_bytes() for p in reference_files(per_class=150)]
    with tempfile.TemporaryDirectory() as scratch:
        project = args.project
        source = "given"
        if project is None:
            if (PROJECT / "model" / "model.keras").is_file():
                project, source = PROJECT, "projects/planets-moons"
            else:
                project, source = train_fallback(Path(scratch)), "trained here (1 epoch)"
        load_avg = os.getloadavg()
        inproc = ceiling(project / "model", payloads)
        port = free_port()
        process, startup = start_server(project, port, Path(scratch) / "server.log")
        try:
            url = f"http://127.0.0.1:{port}/predict"
            single = load(url, payloads, clients=1, requests_total=args.requests // 2)
            before = group_cpu(process.pid)
            eight = load(url, payloads, clients=8, requests_total=args.requests)
            eight["server_cpu"] = cpu_per_request(before, group_cpu(process.pid), args.requests)
        finally:
            stop_server(process)

    overhead = (
        single["latency_ms_p50"] - inproc["decode_ms_per_image"] - inproc["predict_ms_batch_1"]
    )
    result = {
        "benchmark": "serve",
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in load_avg],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "model": {
            "source": source,
            "project": project.name,
            **{k: inproc[k] for k in ("model_hash", "input_shape")},
        },
        "server": {
            "workers": OPTIONS.workers,
            "max_batch_size": MAX_BATCH,
            "batch_timeout_s": OPTIONS.batch_timeout,
        },
        "startup_to_health_s": round(startup, 2),
        "in_process_ceiling": {
            k: v for k, v in inproc.items() if k not in ("model_hash", "input_shape")
        },
        "one_client": single,
        "eight_clients": eight,
        "ratio_8_clients_to_ceiling": round(eight["requests_per_s"] / inproc["images_per_s"], 3),
        "one_client_p50_breakdown_ms": {
            "decode": inproc["decode_ms_per_image"],
            "predict_batch_1": inproc["predict_ms_batch_1"],
            "http_queues_and_batching_wait": round(overhead, 2),
        },
        "notes": (
            "Clients run on the same machine as the server and share its CPUs. Beyond decode "
            "and predict, a request costs CPU in the HTTP server process (uvicorn, FastAPI, "
            "LitServe's handler) and in the hops through LitServe's multiprocessing-manager "
            "queues (request in, response out: the queue manager process and the worker); "
            "eight_clients.server_cpu splits it by process."
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
