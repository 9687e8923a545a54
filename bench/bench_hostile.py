"""Benchmark celestial-serve against hostile clients: memory, stalled uploads, a long fuzz.

Measures, in one run on one machine, a real server at its default limits:

- the peak resident memory of its HTTP process (``VmHWM`` in ``/proc``, reset
  through ``clear_refs`` before each case) while 16 clients at once upload
  the costliest images the limits let through: palette and transparent PNGs
  at the pixel limit (small files that decode to about 13 bytes a pixel), the
  issue's 6300 x 6300 PNGs, and bodies at the size limit (raw PNGs that
  decode, JSON around base64); then as many clients as the connection cap
  sending bodies at the size limit;
- how long the server holds a connection that stalls in its headers, and an
  upload that stalls in its body;
- a long run of the fuzz test's generator (``tools/hostile_requests.py``):
  10,000 requests to a server without an API key and 10,000 to one with,
  counting the status codes seen.

The model is the reference project's when trained, else a small one trained
here (as in ``bench_serve.py``); the figures do not depend on it.

    python bench/bench_hostile.py --out bench/results/hostile.json
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import io
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from bench_serve import (
    PROJECT,
    free_port,
    reference_files,
    serve_command,
    start_process,
    stop_server,
    train_fallback,
)
from PIL import Image

from celestial_serve.server import ServerOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from hostile_requests import HostileRequest, hostile_requests, repeatable

OPTIONS = ServerOptions(api_key=None)  # the command's defaults
CLIENTS = 16
FUZZ_REQUESTS = 10_000  # per server: one without an API key, one with
API_KEY = "bench-key"
MIB = 2**20


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def largest_square(pixels: int) -> int:
    """The side of the largest square image within ``pixels``."""
    return int(pixels**0.5)


def cases() -> dict[str, tuple[dict[str, str], bytes]]:
    """The uploads to send 16 at once: headers and body."""
    side = largest_square(OPTIONS.max_pixels)
    rng = np.random.default_rng(0)
    noise_side = largest_square((OPTIONS.max_upload_bytes - 64 * 1024) // 3)
    noise = png(Image.fromarray(rng.integers(0, 256, (noise_side, noise_side, 3), np.uint8)))
    filler = rng.integers(0, 256, OPTIONS.max_upload_bytes * 3 // 4 - 1024, np.uint8).tobytes()
    as_png = {"Content-Type": "image/png"}
    return {
        f"palette PNG at the pixel limit ({side} x {side})": (
            as_png,
            png(Image.new("P", (side, side))),
        ),
        f"transparent PNG at the pixel limit ({side} x {side})": (
            as_png,
            png(Image.new("RGBA", (side, side))),
        ),
        "the issue's PNG (6300 x 6300, refused 413)": (as_png, png(Image.new("RGB", (6300, 6300)))),
        f"noise PNG at the size limit ({noise_side} x {noise_side})": (as_png, noise),
        "JSON at the size limit (base64 of bytes that are no image)": (
            {"Content-Type": "application/json"},
            json.dumps({"image": base64.b64encode(filler).decode()}).encode(),
        ),
    }


def tcp_inodes(port: int) -> set[str]:
    """The socket inodes of the established TCP connections to local ``port`` (Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    inodes.add(fields[9])
    return inodes


def http_processes(pgid: int, port: int) -> list[int]:
    """The server's HTTP processes: those of its group holding a connection to ``port``."""
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
        client.recv(4096)  # answered: the connection is kept alive, held by one process
        inodes = tcp_inodes(port)
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                group = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
                if group != pgid:
                    continue
                links = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
                if any(f"socket:[{inode}]" in links for inode in inodes):
                    found.append(int(entry.name))
    return found


def memory_mib(pid: int, field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM = VmRSS from now


def peak_under_load(url: str, pid: int, headers: dict, body: bytes, clients: int) -> dict:
    """Peak memory of ``pid`` while ``clients`` send ``body`` at once, twice over."""
    reset_peak(pid)
    before = memory_mib(pid, "VmRSS")
    barrier = threading.Barrier(clients)

    def upload(_: int) -> int:
        barrier.wait()
        return requests.post(f"{url}/predict", data=body, headers=headers, timeout=120).status_code

    statuses: collections.Counter[int] = collections.Counter()
    for _ in range(2):
        with ThreadPoolExecutor(clients) as pool:
            statuses.update(pool.map(upload, range(clients)))
    return {
        "body_bytes": len(body),
        "clients": clients,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "rss_before_mib": round(before, 1),
        "peak_rss_mib": round(memory_mib(pid, "VmHWM"), 1),
    }


def held_seconds(port: int, sent: bytes) -> dict:
    """How long the server keeps a connection that sent ``sent`` and stalled."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=300) as client:
        client.sendall(sent)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := client.recv(65536):
                answer += chunk
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else None
    return {"held_s": round(time.monotonic() - start, 2), "status": status}


def stalled(port: int) -> dict:
    """Time a stalled connection is held: nothing sent, half the headers, half a body."""
    head = b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: image/png\r\n"
    tries = {
        "nothing sent": b"",
        "headers stalled": head,
        "body stalled": head + b"Content-Length: 100000\r\n\r\n" + b"\x89PNG" * 100,
    }
    with ThreadPoolExecutor(len(tries)) as pool:
        held = pool.map(lambda sent: held_seconds(port, sent), tries.values())
        return dict(zip(tries, held, strict=True))


def fuzz(url: str, samples: list[bytes], count: int, api_key: str | None) -> dict:
    """Send ``count`` generated requests (8 at a time); count status codes and failures."""
    from hypothesis import given

    generated: list[HostileRequest] = []

    @repeatable(count)
    @given(hostile_requests(samples, api_key))
    def collect(request: HostileRequest) -> None:
        generated.append(request)

    collect()
    local = threading.local()

    def send(request: HostileRequest) -> str:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        try:
            response = local.session.post(
                f"{url}/predict",
                params=request.query,
                headers=request.headers,
                data=request.body,
                timeout=10,
            )
        except requests.RequestException as error:
            return type(error).__name__
        return str(response.status_code)

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        seen = collections.Counter(pool.map(send, generated))
    return {
        "requests": len(generated),
        "api_key": api_key is not None,
        "seconds": round(time.perf_counter() - start, 1),
        "statuses": dict(sorted(seen.items())),
        "server_errors_or_no_answer": sum(
            n for s, n in seen.items() if not s.isdigit() or int(s) >= 500
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fuzz-requests", type=int, default=FUZZ_REQUESTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = PROJECT if (PROJECT / "model" / "model.keras").is_file() else train_fallback(root)
        port = free_port()
        process, startup = start_process(
            serve_command(project, port, "lean"), port, root / "server.log"
        )
        try:
            (pid,) = http_processes(process.pid, port)
            idle = memory_mib(pid, "VmRSS")
            with ThreadPoolExecutor(1) as background:
                held = background.submit(stalled, port)  # runs alongside, takes ~30 s
                url = f"http://127.0.0.1:{port}"
                loads = {
                    name: peak_under_load(url, pid, headers, body, CLIENTS)
                    for name, (headers, body) in cases().items()
                }
                headers, body = list(cases().values())[-1]
                capped = peak_under_load(url, pid, headers, body, OPTIONS.max_connections)
                stalled_figures = held.result()
            samples = [p.read_bytes() for p in reference_files(per_class=1)[:2]]
            fuzzed = [fuzz(url, samples, args.fuzz_requests, None)]
        finally:
            stop_server(process)
        port = free_port()
        guarded = serve_command(project, port, "lean")
        process, _ = start_process(guarded, port, root / "guarded.log", api_key=API_KEY)
        try:
            fuzzed.append(fuzz(f"http://127.0.0.1:{port}", samples, args.fuzz_requests, API_KEY))
        finally:
            stop_server(process)
    worst = max(loads.values(), key=lambda load: load["peak_rss_mib"])
    result = {
        "benchmark": "hostile",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "limits": {
            "max_upload_mib": OPTIONS.max_upload_bytes / MIB,
            "max_megapixels": OPTIONS.max_pixels / 1e6,
            "max_decodes": OPTIONS.max_decodes,
            "max_connections": OPTIONS.max_connections,
            "header_timeout_s": OPTIONS.header_timeout,
            "body_timeout_s": OPTIONS.body_timeout,
        },
        "startup_to_health_s": round(startup, 2),
        "http_process_idle_rss_mib": round(idle, 1),
        f"{CLIENTS}_concurrent_uploads": loads,
        f"worst_peak_rss_mib_{CLIENTS}_concurrent": worst["peak_rss_mib"],
        "bodies_at_the_size_limit_from_max_connections_clients": capped,
        "stalled_connections": stalled_figures,
        "fuzz": fuzzed,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
