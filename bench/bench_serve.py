"""Benchmark celestial-serve against the same model's in-process ceiling.

Measures, in one run on one machine:

- the ceiling: encoded image bytes -> probabilities in process (decode,
  preprocess, batched predict), in images per second, with JAX's default
  (asynchronous) and synchronous CPU dispatch; the faster one is the ceiling;
- a real server on 127.0.0.1, once per transport (``--transport lean``, the
  default, and ``stock``, LitServe's own queues and route), side by side:
  start-up time until /health answers 200, latency p50/p95 and requests per
  second with 1 client, requests per second with 8 concurrent clients, and the
  ratio of that to the ceiling; the same with the images sent as multipart
  forms, as a browser sends them;
- the cost of watching: 8-client requests per second of the default (lean)
  server with neither metrics nor prediction log (``--no-metrics``) and with
  both (``--log-dir``), side by side in the same rounds, and their ratio;
- where the time goes: CPU per request in each process (HTTP server, inference
  worker, the load client) and the floor of the HTTP stack: a bare FastAPI route
  that only decodes the upload (`serve_floor.py`) under the same load.

The clients are one asyncio process (uvloop) holding N keep-alive connections,
each sending a raw JPEG body and waiting for the answer before the next: a lean
client, so that the two CPUs go to the server as much as possible.

The model is the reference project's (projects/planets-moons/model) when it has
been trained, else a small one trained here on reference images (recorded in
the output as ``model.source``).

    python bench/bench_serve.py --out bench/results/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import requests

from celestial_serve.server import TRANSPORTS, ServerOptions

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "datasets" / "planets-moons" / "raw"
PROJECT = ROOT / "projects" / "planets-moons"
OPTIONS = ServerOptions()  # the command's defaults
MAX_BATCH = OPTIONS.max_batch_size
FLOOR = Path(__file__).with_name("serve_floor.py")


def reference_files(per_class: int) -> list[Path]:
    if not REFERENCE.is_dir():
        sys.exit(f"bench_serve: reference images not found at {REFERENCE}")
    classes = sorted(p for p in REFERENCE.iterdir() if p.is_dir())
    return [path for c in classes for path in sorted(c.glob("*.jpg"))[:per_class]]


def train_fallback(root: Path) -> Path:
    """A project with a model trained briefly on reference images at the default size."""
    from celestial_data import PrepareParams, decode, to_array, write_prepared
    from celestial_models import TrainParams, train_model

    image_format = PrepareParams().image_format
    files = reference_files(per_class=20)
    classes = sorted({p.parent.name for p in files})
    images = np.stack([to_array(decode(p), image_format) for p in files])
    labels = np.array([classes.index(p.parent.name) for p in files])
    names = [f"{p.parent.name}/{p.name}" for p in files]
    prepared = write_prepared(
        root / "prepared",
        classes,
        image_format.color_mode,
        {"train": (images, labels, names), "val": (images, labels, names)},
        view=image_format.view,
    )
    project = root / "bench-bodies"
    train_model(prepared, project / "model", TrainParams(epochs=1, min_steps=0))
    return project


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def warm_classifier(model_dir: Path, dispatch: str):
    """The model loaded in this process, compiled for batches of 1 and `MAX_BATCH`.

    ``dispatch`` is JAX's CPU dispatch: "asynchronous" (its default) or
    "synchronous" (what the server's workers use); it is chosen once per process.
    """
    from celestial_models import load_classifier, synchronous_dispatch

    if dispatch == "synchronous":
        synchronous_dispatch()
    classifier = load_classifier(model_dir)
    blank = np.zeros((MAX_BATCH, *classifier.input_shape), np.uint8)
    for size in (1, MAX_BATCH):
        classifier.predict(blank[:size])
    return classifier


def end_to_end(classifier, payloads: list[bytes]) -> float:
    """Seconds to turn ``payloads`` into probabilities, `MAX_BATCH` images at a time."""
    start = time.perf_counter()
    for i in range(0, len(payloads), MAX_BATCH):
        chunk = payloads[i : i + MAX_BATCH]
        classifier.predict(np.stack([classifier.prepare(data) for data in chunk]))
    return time.perf_counter() - start


def ceiling(model_dir: Path, payloads: list[bytes], dispatch: str, rounds: int = 5) -> dict:
    """In-process images/s from encoded bytes to probabilities, batched like the server.

    Every figure is the median of ``rounds`` runs, as the machine may be shared.
    """
    classifier = warm_classifier(model_dir, dispatch)
    blank = np.zeros((MAX_BATCH, *classifier.input_shape), np.uint8)

    def median(fn, repeat: int) -> float:
        return statistics.median(timed(fn) for _ in range(rounds)) / repeat

    some = payloads[:256]
    return {
        "images_per_s": round(
            len(payloads)
            / statistics.median(end_to_end(classifier, payloads) for _ in range(rounds)),
            1,
        ),
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
        "image_size": classifier.image_size,
        "color_mode": classifier.color_mode,
    }


def ceiling_in_subprocess(model_dir: Path, dispatch: str) -> dict:
    """`ceiling` in a fresh process (JAX's dispatch is chosen once per process)."""
    output = subprocess.run(
        [sys.executable, __file__, "--ceiling", str(model_dir), "--dispatch", dispatch],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_process(
    command: list[str], port: int, log: Path, api_key: str | None = None
) -> tuple[subprocess.Popen, float]:
    """Start a server in its own process group; return it and seconds until /health is 200.

    With ``api_key``, the server is given it (``LIT_SERVER_API_KEY``).
    """
    start = time.perf_counter()
    env = {**os.environ, **({} if api_key is None else {"LIT_SERVER_API_KEY": api_key})}
    headers = {} if api_key is None else {"X-API-Key": api_key}
    with open(log, "wb") as stream:
        process = subprocess.Popen(
            command, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    url = f"http://127.0.0.1:{port}/health"
    while time.perf_counter() - start < 300:
        if process.poll() is not None:
            sys.exit(f"bench_serve: server exited:\n{log.read_text()}")
        try:
            if requests.get(url, headers=headers, timeout=2).status_code == 200:
                return process, time.perf_counter() - start
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    stop_server(process)
    sys.exit(f"bench_serve: server not healthy after 300 s:\n{log.read_text()}")


#: The lean server without and with metrics and prediction log ("--log-dir" is added).
WATCH = {"plain": ["--no-metrics"], "watched": []}


def serve_command(project: Path, port: int, transport: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celestial_serve",
        str(project),
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--transport",
        transport,
        *extra,
    ]


@contextlib.contextmanager
def running(process: subprocess.Popen) -> Iterator[None]:
    """Let a paused server's process group run, and pause it again afterwards.

    Servers not being measured are paused (SIGSTOP): LitServe's own batched
    loop polls its queue without pause even when idle, and would take the CPU
    from the server being measured.
    """
    os.killpg(process.pid, signal.SIGCONT)
    try:
        yield
    finally:
        os.killpg(process.pid, signal.SIGSTOP)


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM the server (resumed first, if paused); kill what is left after a minute."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGCONT)
    time.sleep(0.5)  # let a resumed group run before it is told to stop
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        print(f"bench_serve: {process.args[-1]} server ignored SIGTERM; killed", file=sys.stderr)
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
            role = "main (starts and watches the others)"
        elif "spawn_main" in cmdline:
            role = "inference worker"
        elif "resource_tracker" in cmdline:
            role = "resource tracker"
        elif "celestial_serve" in cmdline:
            role = "http server"  # forked from main, or LitServe's manager process
        else:
            role = "other"
        usage[int(entry.name)] = (role, (int(fields[11]) + int(fields[12])) / tick)
    return usage


def cpu_per_request(before: dict, after: dict, requests_total: int) -> list[dict]:
    """Milliseconds of CPU per request for each busy server process, busiest first."""
    rows = [
        {
            "role": role,
            "cpu_ms_per_request": round(1000 * (used - before[pid][1]) / requests_total, 3),
        }
        for pid, (role, used) in after.items()
        if pid in before
    ]
    return sorted(
        (row for row in rows if row["cpu_ms_per_request"] >= 0.005),
        key=lambda row: -row["cpu_ms_per_request"],
    )


BOUNDARY = "celestial-bench-boundary"


def raw_request(data: bytes) -> bytes:
    """``POST /predict`` with the image as the body."""
    return http_request("image/jpeg", data)


def multipart_request(data: bytes) -> bytes:
    """``POST /predict`` with the image as a form's ``file`` field, as a browser sends it."""
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="image.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return http_request(f"multipart/form-data; boundary={BOUNDARY}", body)


def http_request(content_type: str, body: bytes) -> bytes:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def client(port: int, bodies: list[bytes], next_index, total: int, latencies: list) -> None:
    """One keep-alive connection: send, read the whole answer, repeat until ``total`` are sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (i := next(next_index)) < total:
            start = time.perf_counter()
            writer.write(bodies[i % len(bodies)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if head[9:12] != b"200":
                raise RuntimeError(f"request {i}: {head[:12]!r} {body[:200]!r}")
    finally:
        writer.close()


def load(
    port: int, payloads: list[bytes], clients: int, requests_total: int, form=raw_request
) -> dict:
    """Send ``requests_total`` requests over ``clients`` concurrent connections.

    ``form`` makes the request of an image (`raw_request`, `multipart_request`).
    """
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    bodies = [form(data) for data in payloads]

    async def run(total: int) -> list[float]:
        latencies: list[float] = []
        counter = itertools.count()
        await asyncio.gather(
            *(client(port, bodies, counter, total, latencies) for _ in range(clients))
        )
        return latencies

    asyncio.run(run(4 * clients))  # warm connections and batch sizes
    before, start = os.times(), time.perf_counter()
    latencies = asyncio.run(run(requests_total))
    elapsed, after = time.perf_counter() - start, os.times()
    return {
        "clients": clients,
        "requests": requests_total,
        "requests_per_s": round(requests_total / elapsed, 1),
        "latency_ms_p50": round(1000 * percentile(latencies, 50), 2),
        "latency_ms_p95": round(1000 * percentile(latencies, 95), 2),
        "client_cpu_ms_per_request": round(
            1000 * (sum(after[:2]) - sum(before[:2])) / requests_total, 3
        ),
    }


def measure_round(
    port: int, payloads: list[bytes], pgid: int, requests_total: int, form=raw_request
) -> dict:
    """One 8-client `load` round, with each server process's CPU per request."""
    before = group_cpu(pgid)
    figures = load(port, payloads, 8, requests_total, form)
    figures["server_cpu"] = cpu_per_request(before, group_cpu(pgid), requests_total)
    return figures


def median_round(runs: list[dict]) -> dict:
    """The round with the median requests per second, and every round's figure."""
    ordered = sorted(runs, key=lambda run: run["requests_per_s"])
    median = dict(ordered[len(ordered) // 2])
    median["requests_per_s_all_rounds"] = [run["requests_per_s"] for run in runs]
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--project", type=Path, help="project to serve (default: see above)")
    parser.add_argument("--requests", type=int, default=3000, help="per 8-client round")
    parser.add_argument("--rounds", type=int, default=11, help="rounds (medians kept)")
    parser.add_argument("--ceiling", type=Path, help=argparse.SUPPRESS)  # internal: one ceiling
    parser.add_argument("--dispatch", default="asynchronous", help=argparse.SUPPRESS)
    args = parser.parse_args()

    payloads = [p.read_bytes() for p in reference_files(per_class=150)]
    if args.ceiling is not None:
        print(json.dumps(ceiling(args.ceiling, payloads, args.dispatch)))
        return
    if args.out is None:
        parser.error("--out is required")
    with tempfile.TemporaryDirectory() as scratch:
        project = args.project
        source = "given"
        if project is None:
            if (PROJECT / "model" / "model.keras").is_file():
                project, source = PROJECT, "projects/planets-moons"
            else:
                project, source = train_fallback(Path(scratch)), "trained here (1 epoch)"
        load_avg = os.getloadavg()
        ceilings = {
            mode: ceiling_in_subprocess(project / "model", mode)
            for mode in ("asynchronous", "synchronous")
        }
        best = max(ceilings, key=lambda mode: ceilings[mode]["images_per_s"])
        details = ceilings[best]
        classifier = warm_classifier(project / "model", best)

        servers, startup, ports = {}, {}, {}
        floor_server = None
        try:
            for transport in TRANSPORTS:  # one at a time: a starting server takes the CPUs
                ports[transport] = free_port()
                command = serve_command(project, ports[transport], transport)
                log = Path(scratch) / f"server-{transport}.log"
                servers[transport], startup[transport] = start_process(
                    command, ports[transport], log
                )
                os.killpg(servers[transport].pid, signal.SIGSTOP)
            watch_ports: dict[str, int] = {}
            for name, extra in WATCH.items():
                watch_ports[name] = free_port()
                if name == "watched":
                    extra = [*extra, "--log-dir", str(Path(scratch) / "prediction-log")]
                command = serve_command(project, watch_ports[name], "lean", *extra)
                servers[name], startup[name] = start_process(
                    command, watch_ports[name], Path(scratch) / f"server-{name}.log"
                )
                os.killpg(servers[name].pid, signal.SIGSTOP)
            floor_port = free_port()
            floor_command = [
                sys.executable,
                str(FLOOR),
                "--port",
                str(floor_port),
                "--image-size",
                str(details["image_size"]),
                "--color-mode",
                details["color_mode"],
            ]
            floor_server, _ = start_process(floor_command, floor_port, Path(scratch) / "floor.log")
            # The machine's speed drifts: the ceiling, each server and the floor are
            # measured in turn, round after round, and compared round by round.
            single = {}
            for transport in TRANSPORTS:
                with running(servers[transport]):
                    single[transport] = load(
                        ports[transport], payloads, clients=1, requests_total=500
                    )
            rounds: list[dict] = []
            for _ in range(args.rounds):
                passes = 3  # about as long as a server round
                one = {
                    "ceiling": passes
                    * len(payloads)
                    / sum(end_to_end(classifier, payloads) for _ in range(passes))
                }
                # Alternated, so that a drift of the machine's speed favours neither.
                order = list(WATCH) if len(rounds) % 2 == 0 else list(WATCH)[::-1]
                for name in order:
                    with running(servers[name]):
                        one[name] = measure_round(
                            watch_ports[name], payloads, servers[name].pid, args.requests
                        )
                for transport in TRANSPORTS:
                    server = servers[transport]
                    with running(server):
                        one[transport] = {
                            "served": measure_round(
                                ports[transport], payloads, server.pid, args.requests
                            ),
                            "form": measure_round(
                                ports[transport],
                                payloads,
                                server.pid,
                                args.requests // 2,
                                multipart_request,
                            ),
                        }
                one["floor"] = measure_round(floor_port, payloads, floor_server.pid, args.requests)
                rounds.append(one)
        finally:
            for server in servers.values():
                stop_server(server)
            if floor_server is not None:
                stop_server(floor_server)

    floor = median_round([r["floor"] for r in rounds])
    floor_ratios = [r["floor"]["requests_per_s"] / r["ceiling"] for r in rounds]
    transports = {}
    for transport in TRANSPORTS:
        eight = median_round([r[transport]["served"] for r in rounds])
        form = median_round([r[transport]["form"] for r in rounds])
        ratios = [r[transport]["served"]["requests_per_s"] / r["ceiling"] for r in rounds]
        form_ratios = [r[transport]["form"]["requests_per_s"] / r["ceiling"] for r in rounds]
        transports[transport] = {
            "startup_to_health_s": round(startup[transport], 2),
            "one_client": single[transport],
            "eight_clients": eight,
            "ratio_8_clients_to_ceiling": round(statistics.median(ratios), 3),
            "ratio_all_rounds": [round(x, 3) for x in ratios],
            "eight_clients_multipart": {
                **{
                    k: form[k]
                    for k in (
                        "requests_per_s",
                        "latency_ms_p50",
                        "latency_ms_p95",
                        "requests_per_s_all_rounds",
                    )
                },
                "server_cpu": form["server_cpu"],
                "ratio_to_ceiling": round(statistics.median(form_ratios), 3),
                "ratio_all_rounds": [round(x, 3) for x in form_ratios],
            },
        }
    watch_ratios = [r["watched"]["requests_per_s"] / r["plain"]["requests_per_s"] for r in rounds]
    watching = {
        name: {
            "startup_to_health_s": round(startup[name], 2),
            "options": WATCH[name] + (["--log-dir DIR"] if name == "watched" else []),
            "eight_clients": median_round([r[name] for r in rounds]),
        }
        for name in WATCH
    }
    watching["ratio_watched_to_plain"] = round(statistics.median(watch_ratios), 3)
    watching["ratio_all_rounds"] = [round(x, 3) for x in watch_ratios]
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
            **{k: details[k] for k in ("model_hash", "input_shape")},
        },
        "server": {
            "workers": OPTIONS.workers,
            "api_servers": OPTIONS.api_servers or OPTIONS.workers,
            "max_batch_size": MAX_BATCH,
            "batch_timeout_s": OPTIONS.batch_timeout,
        },
        "in_process_ceiling": {
            "images_per_s": round(statistics.median(r["ceiling"] for r in rounds), 1),
            "images_per_s_all_rounds": [round(r["ceiling"], 1) for r in rounds],
            "dispatch": best,
            **{
                mode: {
                    k: v
                    for k, v in figures.items()
                    if k not in ("model_hash", "input_shape", "image_size", "color_mode")
                }
                for mode, figures in ceilings.items()
            },
        },
        "default_transport": OPTIONS.transport,
        "transports": transports,
        "metrics_and_log": watching,
        "http_floor_8_clients": {
            **{k: floor[k] for k in ("requests_per_s", "requests_per_s_all_rounds")},
            "cpu_ms_per_request": round(
                sum(row["cpu_ms_per_request"] for row in floor["server_cpu"]), 3
            ),
            "client_cpu_ms_per_request": floor["client_cpu_ms_per_request"],
            "ratio_to_ceiling": round(statistics.median(floor_ratios), 3),
        },
        "notes": (
            "Clients run on the same machine as the server and share its two CPUs. Each round "
            "measures the in-process ceiling (three passes over the 1,500 reference images), then "
            "the server on each transport (the other one paused with SIGSTOP), then the floor; "
            "ratios are per round, their median is kept. "
            "eight_clients.server_cpu splits the server's CPU per request by process; the "
            "ceiling spends 1000 / images_per_s ms of one CPU per image. eight_clients sends "
            "raw JPEG bodies; eight_clients_multipart sends the same images as multipart forms, "
            "as a browser does (half as many requests per round). "
            "http_floor_8_clients is a bare FastAPI route on uvicorn that only decodes the "
            "upload (bench/serve_floor.py): no model, no LitServe, no queues. "
            "metrics_and_log compares the lean server with --no-metrics (plain) and with "
            "metrics on and --log-dir (watched), measured one after the other in each round "
            "(their order alternating), raw JPEG bodies; the ratio is per round, its median kept."
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
