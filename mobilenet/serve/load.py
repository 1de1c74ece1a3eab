"""``bench-serve``: a closed-loop load against a served model, compared with the same backend offline.

The server runs as a subprocess (``mobilenet serve --port 0``, so it picks a free local port); ``concurrency``
client threads each send one single-image request (an FP32 tensor with the binary tensor extension, as
``tritonclient`` sends it), wait for the answer and send the next, until a fixed number of requests is done or a
time limit passes. The offline reference is the same backend in this process, called directly on batches of
``concurrency`` images (at most ``max_batch``): what the server could reach if HTTP, queueing and batching cost
nothing. It is measured right before and right after each level and averaged, so that a machine whose load drifts
(other jobs) biases the ratio as little as possible.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import MobileNetError
from .protocol import HEADER_LENGTH, INPUT_TENSOR, OUTPUT


@dataclass
class Offline:
    """The backend called directly: images per second and the median seconds per call at one batch size."""

    batch: int
    images_per_s: float
    latency_s: float


@dataclass
class Level:
    """One concurrency level of the closed loop."""

    concurrency: int
    ok: int
    failures: int
    seconds: float
    latencies: list[float] = field(repr=False)
    mean_batch: float
    offline: Offline
    first_error: str = ""
    model_s: float = 0.0    # mean seconds per model call in the server
    server_s: float = 0.0   # mean seconds per request in the server (body read to response built)

    @property
    def images_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")

    @property
    def ratio(self) -> float:
        return self.images_per_s / self.offline.images_per_s


def offline(runner, batch: int, seconds: float = 2.0) -> Offline:
    """Times ``runner`` on batches of ``batch`` random images for about ``seconds`` (after 3 warm-up calls)."""
    info = runner.info
    x = np.random.default_rng(0).standard_normal((batch, info.in_chans, info.resolution, info.resolution),
                                                 dtype=np.float32)
    for _ in range(3):
        runner(x)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - t)
    return Offline(batch, batch * len(times) / sum(times), float(np.median(times)))


def infer_body(info) -> tuple[bytes, dict[str, str]]:
    """One single-image infer request with binary input and output, and its headers."""
    x = np.random.default_rng(1).standard_normal((1, info.in_chans, info.resolution, info.resolution),
                                                 dtype=np.float32)
    raw = x.astype("<f4").tobytes()
    header = json.dumps({"inputs": [{"name": INPUT_TENSOR, "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": OUTPUT, "parameters": {"binary_data": True}}]}).encode()
    return header + raw, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def closed_loop(address: tuple[str, int], path: str, body: bytes, headers: dict, concurrency: int, requests: int,
                time_limit: float) -> tuple[list[float], int, float, str]:
    """Runs ``concurrency`` clients, each on its own keep-alive connection, until ``requests`` are sent or
    ``time_limit`` seconds pass.

    Returns:
        latencies of the successful requests (s), the number of failures, the elapsed seconds, the first error.
    """
    lock, start_line = threading.Lock(), threading.Barrier(concurrency + 1)
    state = {"issued": 0, "failures": 0, "error": ""}
    latencies: list[float] = []
    deadline = [0.0]

    def client():
        try:
            conn = _connect(address)  # before the start line, so that no measured request includes a connect
        except OSError:
            conn = None
        start_line.wait()
        while True:
            with lock:
                if state["issued"] >= requests or time.perf_counter() > deadline[0]:
                    break
                state["issued"] += 1
            t = time.perf_counter()
            try:
                conn = conn or _connect(address)
                conn.request("POST", path, body, headers)
                resp = conn.getresponse()
                answer = resp.read()
                error = "" if resp.status == 200 else f"HTTP {resp.status}: {answer[:200]!r}"
            except (OSError, http.client.HTTPException) as e:
                error, conn = f"{type(e).__name__}: {e}", None  # reconnect on the next request
            elapsed = time.perf_counter() - t
            with lock:
                if error:
                    state["failures"] += 1
                    state["error"] = state["error"] or error
                else:
                    latencies.append(elapsed)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    begin = time.perf_counter()
    deadline[0] = begin + time_limit
    start_line.wait()
    for t in threads:
        t.join()
    return latencies, state["failures"], time.perf_counter() - begin, state["error"]


def _connect(address: tuple[str, int]) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection(*address, timeout=60)
    conn.connect()
    # http.client sends a large body in a second write; with Nagle's algorithm that write waits for the server's
    # delayed ACK (40 ms on Linux) on every request.
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def scrape(address: tuple[str, int]) -> dict[str, float]:
    """The server's histogram sums and counts (``mobilenet_batch_size_sum``, ``..._count``, ...) so far."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection(*address, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.endswith(("_sum", "_count"))}


def scrape_batches(address: tuple[str, int]) -> tuple[float, float]:
    """The server's ``mobilenet_batch_size`` histogram sum and count (images and model calls so far)."""
    values = scrape(address)
    return values.get("mobilenet_batch_size_sum", 0.0), values.get("mobilenet_batch_size_count", 0.0)


def _means(before: dict[str, float], after: dict[str, float]) -> tuple[float, float, float]:
    """Between two scrapes: images per model call, seconds per model call, seconds per request in the server."""
    def mean(name):
        calls = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
        return (after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)) / max(calls, 1)
    return mean("mobilenet_batch_size"), mean("mobilenet_batch_seconds"), mean("mobilenet_request_latency_seconds")


class ServerProcess:
    """``mobilenet serve ARGS --port 0`` as a subprocess; the address is read from its first line."""

    def __init__(self, args: list[str], startup_timeout: float = 300.0):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "mobilenet", "serve", *args, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout], daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()
        self.address = self._wait_for_address(lines, startup_timeout)

    def _wait_for_address(self, lines: queue.Queue, timeout: float) -> tuple[str, int]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if " on http://" in line:
                host, port = line.split(" on http://", 1)[1].split()[0].rsplit(":", 1)
                return host.strip("[]"), int(port)
        self.proc.kill()
        self.proc.wait()
        tail = "".join(self._stderr[-5:]).strip()
        raise MobileNetError(f"the server did not start: {tail or 'no output'}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit status once it has drained (killed after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def bench_serve(runner, server_args: list[str], concurrencies=(1, 8, 32), requests: int = 2000,
                time_limit: float = 30.0, max_batch: int = 32,
                model_name: str | None = None) -> tuple[list[Level], int]:
    """Measures the backend offline, then the served model under each concurrency.

    Args:
        runner: the backend, for the offline reference.
        server_args: ``mobilenet serve`` arguments for the same model and backend (without ``--port``).
        concurrencies: closed-loop client counts.
        requests: single-image requests per level (after a warm-up of 4 per client).
        time_limit: seconds per level at most.
        max_batch: the server's ``--max-batch`` (the offline batch is ``min(concurrency, max_batch)``).
        model_name: the served name (default the model's).

    Returns:
        one :class:`Level` per concurrency, and the server's exit status after SIGTERM.
    """
    body, headers = infer_body(runner.info)
    path = f"/v2/models/{model_name or runner.info.name}/infer"
    server = ServerProcess(server_args)
    levels = []
    try:
        for c in concurrencies:
            closed_loop(server.address, path, body, headers, c, 4 * c, time_limit)
            before = offline(runner, min(c, max_batch))
            start = scrape(server.address)
            lat, failures, seconds, error = closed_loop(server.address, path, body, headers, c, requests, time_limit)
            mean_batch, model_s, server_s = _means(start, scrape(server.address))
            ref = _mean(before, offline(runner, min(c, max_batch)))
            levels.append(Level(c, len(lat), failures, seconds, lat, mean_batch, ref, error, model_s, server_s))
    finally:
        status = server.stop()
    return levels, status


def _mean(a: Offline, b: Offline) -> Offline:
    return Offline(a.batch, (a.images_per_s + b.images_per_s) / 2, (a.latency_s + b.latency_s) / 2)


def goals(levels: list[Level], max_delay_ms: float) -> list[tuple[str, str, bool]]:
    """The serving goals, each as (goal, measured, met)."""
    out = []
    by_c = {lv.concurrency: lv for lv in levels}
    if 32 in by_c:
        lv = by_c[32]
        bound = max_delay_ms / 1000 + 2 * lv.offline.latency_s
        out += [("c=32 throughput >= 80% of offline batch 32", f"{lv.ratio:.0%}", lv.ratio >= 0.8),
                ("c=32 p99 <= max-delay + 2 x batch-32 latency",
                 f"{lv.percentile(99) * 1e3:.1f} ms vs {bound * 1e3:.1f} ms ({lv.percentile(99) / bound:.2f}x)",
                 lv.percentile(99) <= bound)]
    failures = sum(lv.failures for lv in levels)
    out.append(("zero failed requests", str(failures), failures == 0))
    if 1 in by_c:
        lv = by_c[1]
        added = lv.percentile(50) - lv.offline.latency_s
        out.append(("c=1 added latency (p50 - offline batch 1) <= 1 ms", f"{added * 1e3:.2f} ms", added <= 1e-3))
    return out
