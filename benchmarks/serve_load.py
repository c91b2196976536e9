"""Load benchmark for ``lggseg serve``: a bounded number of requests from concurrent clients.

It starts ``lggseg serve`` as a subprocess on a free port of 127.0.0.1 (loopback only, always),
waits for ``/healthz``, sends real slices of the bundled sample (one per request by default, the
way the web page sends a single slice, with images in the answer), and reports throughput, the
p50/p95/p99 latency, the error count and the server's peak resident memory (VmHWM). It stops the
server itself when done, or when interrupted.

    nice -n 10 python benchmarks/serve_load.py              # 200 requests, 8 concurrent clients
    nice -n 10 python benchmarks/serve_load.py --quick      # 24 requests, 4 clients
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HOST = "127.0.0.1"  # the benchmark never talks to anything but loopback


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def proc_status(pid: int, key: str) -> float | None:
    """A memory line of /proc/<pid>/status in MB (Linux only; None elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def sample_slices() -> list[Path]:
    """The bundled sample's slice images (found without importing torch into this process)."""
    from importlib import resources

    root = Path(str(resources.files("lggseg").joinpath("sample", "kaggle_3m")))
    slices = sorted(p for p in root.glob("*/*.tif") if not p.stem.endswith("_mask"))
    if not slices:
        raise SystemExit("no sample slices found in the package")
    return slices


def start_server(port: int, args: argparse.Namespace, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "lggseg",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--runtime",
        args.runtime,
        "--queue",
        str(max(16, args.concurrency)),
    ]
    if args.weights:
        command += ["--weights", args.weights]
    with open(log, "wb") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(server: subprocess.Popen[bytes], base: str, log: Path, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}:\n{log.read_text()[-2000:]}")
        try:
            response = httpx.get(base + "/healthz", timeout=2)
            if response.status_code == 200 and response.json().get("ready"):
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"the server was not ready after {timeout:.0f} s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGINT)
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(5)


def run_load(base: str, slices: list[Path], args: argparse.Namespace) -> tuple[list[float], list[str], float]:
    """Send ``args.requests`` requests from ``args.concurrency`` threads; latencies and errors."""
    payloads = [(p.name, p.read_bytes()) for p in slices]
    url = f"{base}/api/v1/segment" + ("" if args.images else "?images=false")
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)

    with httpx.Client(timeout=args.request_timeout, limits=limits) as client:

        def one(i: int) -> None:
            chosen = [
                payloads[(i * args.slices_per_request + k) % len(payloads)] for k in range(args.slices_per_request)
            ]
            files = [("files", (name, data, "application/octet-stream")) for name, data in chosen]
            began = time.perf_counter()
            try:
                response = client.post(url, files=files)
                ok = response.status_code == 200 and len(response.json()["cases"]) >= 1
                problem = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - began
            with lock:
                if problem is None:
                    latencies.append(elapsed)
                else:
                    errors.append(problem)

        for i in range(args.warmup):  # not counted: first-call allocations
            one(-1 - i)
        latencies.clear()
        errors.clear()
        began = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - began
    return latencies, errors, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="requests to send (default 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--quick", action="store_true", help="24 requests from 4 clients")
    parser.add_argument("--slices-per-request", type=int, default=1, help="slices in each request (default 1)")
    parser.add_argument("--no-images", dest="images", action="store_false", help="ask for masks only (?images=false)")
    parser.add_argument("--weights", default=None, help="weights file (default: the shipped model)")
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--warmup", type=int, default=2, help="uncounted requests first (default 2)")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument(
        "--startup-timeout", type=float, default=600.0, help="seconds to wait for the server to be ready"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.concurrency = 24, 4
    if args.requests < 1 or args.concurrency < 1 or args.slices_per_request < 1:
        parser.error("--requests, --concurrency and --slices-per-request must be >= 1")

    slices = sample_slices()
    port = free_port()
    base = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix="lggseg-bench-") as tmp:
        log = Path(tmp) / "server.log"
        server = start_server(port, args, log)
        try:
            started = time.perf_counter()
            health = wait_ready(server, base, log, args.startup_timeout)
            startup = time.perf_counter() - started
            rss_idle = proc_status(server.pid, "VmRSS")
            latencies, errors, wall = run_load(base, slices, args)
            peak = proc_status(server.pid, "VmHWM")
        finally:
            stop_server(server)

    values = np.array(latencies) if latencies else np.array([float("nan")])
    report = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "slices_per_request": args.slices_per_request,
        "images_in_answer": args.images,
        "ok": len(latencies),
        "errors": len(errors),
        "wall_s": round(wall, 3),
        "throughput_req_s": round(len(latencies) / wall, 3),
        "throughput_slices_s": round(len(latencies) * args.slices_per_request / wall, 3),
        "latency_p50_s": round(float(np.percentile(values, 50)), 4),
        "latency_p95_s": round(float(np.percentile(values, 95)), 4),
        "latency_p99_s": round(float(np.percentile(values, 99)), 4),
        "latency_max_s": round(float(values.max()), 4),
        "server_startup_s": round(startup, 2),
        "server_rss_idle_mb": round(rss_idle, 1) if rss_idle else None,
        "server_peak_rss_mb": round(peak, 1) if peak else None,
        "runtime": health["runtime"],
        "model_sha256": health["model"]["sha256"],
        "workers": health["limits"]["workers"],
        "cpu_count": os.cpu_count(),
    }
    print(
        f"lggseg serve load test: {args.requests} requests, {args.concurrency} concurrent clients, "
        f"{args.slices_per_request} slice(s) each, on {base}"
    )
    print(f"  ok / errors        {report['ok']} / {report['errors']}")
    print(f"  wall time          {report['wall_s']:.2f} s")
    print(
        f"  throughput         {report['throughput_req_s']:.2f} requests/s ({report['throughput_slices_s']:.2f} "
        "slices/s)"
    )
    print(
        f"  latency p50/95/99  {report['latency_p50_s']:.3f} / {report['latency_p95_s']:.3f} / "
        f"{report['latency_p99_s']:.3f} s (max {report['latency_max_s']:.3f})"
    )
    print(
        f"  server peak RSS    {report['server_peak_rss_mb']} MB (idle after start {report['server_rss_idle_mb']} MB)"
    )
    for problem in sorted(set(errors))[:5]:
        print(f"  error: {problem}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
