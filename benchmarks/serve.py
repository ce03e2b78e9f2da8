"""`fakedet serve` under load, against offline `fakedet predict` on the same images.

A server is started on loopback (never another address), then, in interleaved rounds, the same
images are scored offline (`predict_images`, as `fakedet predict` runs it: the fused model,
batches of 32, its loader) and by CLIENTS concurrent HTTP clients sending one image per request
until REQUESTS requests are done or the round's time is up; a third run makes every fifth
request a bad upload (truncated, text, empty) and checks the good ones still succeed. The report
gives medians over rounds: images/s, the ratio to offline (on as many images as a run sends),
latency p50/p95/p99, errors and the server's peak RSS (VmHWM).

    python benchmarks/serve.py runs/demo/best_model.pt            # 32 clients, 256 px images
    python benchmarks/serve.py runs/demo --clients 8 --requests 200 --rounds 2

The clients run in this process on the same machine as the server, so on a small machine they
take CPU from it (the report says how much): the figures are a floor for a server with cores of
its own.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from fakedet.demo.dataset import build_demo_dataset
from fakedet.inference.predictor import calibration_of, predict_images
from fakedet.inference.results import collect_images
from fakedet.serve.scoring import ServedModel


@dataclass
class LoadRun:
    """One run of the clients: what each request took and how it ended."""

    seconds: float = 0.0
    good_latencies: list[float] = field(default_factory=list)
    good_failed: int = 0  # good images not answered 200
    bad_sent: int = 0
    bad_refused: int = 0  # bad uploads answered 422, as they should be
    client_cpu_seconds: float = 0.0  # what the clients themselves took of the machine

    @property
    def images_per_second(self) -> float:
        return len(self.good_latencies) / self.seconds

    def percentile(self, share: float) -> float:
        return float(np.percentile(self.good_latencies, share)) * 1e3


def bad_uploads(good: bytes) -> list[bytes]:
    return [good[: len(good) // 3], b"this is not an image", b""]


BOUNDARY = "fakedet-benchmark-boundary"


def predict_request(name: str, data: bytes) -> bytes:
    """The whole HTTP/1.1 request of one upload to /v1/predict (multipart, field `files`), as
    `curl -F files=@NAME` sends it; built once per image, so a client's work per request is a
    socket write and a read."""
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def read_status(reader: asyncio.StreamReader) -> int:
    """The status of one HTTP/1.1 response, its body read (the server sends Content-Length)."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def load(
    port: int,
    images: list[bytes],
    clients: int,
    requests: int,
    time_limit: float,
    bad_every: int,
) -> LoadRun:
    """CLIENTS clients, each on its own keep-alive connection, share REQUESTS requests (one image
    each); every `bad_every`-th is bad. The clients are raw HTTP over asyncio streams rather than
    an HTTP library: on a small machine they share the server's cores, and a library's
    per-request Python (httpx: about a millisecond) would be measured as the server's cost."""
    good = [predict_request(f"{n}.png", data) for n, data in enumerate(images)]
    bad = [predict_request("bad.png", data) for data in bad_uploads(images[0])]
    run = LoadRun()
    counter = iter(range(requests))
    deadline = time.monotonic() + time_limit

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for number in counter:
                if time.monotonic() > deadline:
                    return
                is_bad = bad_every > 0 and number % bad_every == bad_every - 1
                request = bad[number % len(bad)] if is_bad else good[number % len(good)]
                started = time.perf_counter()
                writer.write(request)
                status = await read_status(reader)
                took = time.perf_counter() - started
                if is_bad:
                    run.bad_sent += 1
                    run.bad_refused += status == 422
                elif status == 200:
                    run.good_latencies.append(took)
                else:
                    run.good_failed += 1
        finally:
            writer.close()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    run.seconds = time.perf_counter() - started
    run.client_cpu_seconds = time.process_time() - cpu
    return run


def offline_images_per_second(model_path: Path, paths: list[Path], count: int) -> float:
    """`fakedet predict`'s throughput on `count` images cycled from `paths` (as many as a load
    run sends, so its loader workers' start is spread alike): its model load and scoring call."""
    served = ServedModel.load(model_path, "cpu")
    paths = [paths[number % len(paths)] for number in range(count)]
    started = time.perf_counter()
    predictions = predict_images(
        served.model, paths, served.img_size, calibration_of(served.checkpoint)
    )
    seconds = time.perf_counter() - started
    assert all(p.realness is not None for p in predictions)
    return len(paths) / seconds


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model: Path, port: int, max_batch: int, max_wait_ms: float) -> subprocess.Popen:
    command = [sys.executable, "-m", "fakedet", "serve", str(model), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--device", "cpu", "--max-batch", str(max_batch)]
    command += ["--max-wait-ms", str(max_wait_ms), "--log-level", "warning"]
    server = subprocess.Popen(command)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health").status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not come up within 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="Checkpoint, run folder or export to serve.")
    parser.add_argument("--images", type=int, default=64, help="Distinct images (demo photos).")
    parser.add_argument("--size", type=int, default=256, help="Side of each image, in pixels.")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=640, help="Requests per run (bounded).")
    parser.add_argument("--time-limit", type=float, default=120.0, help="Seconds per run, most.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        build_demo_dataset(Path(folder), num_images=args.images, img_size=args.size, seed=0)
        paths = collect_images([Path(folder)])[: args.images]
        images = []
        for path in paths:  # as PNG bytes, decoded by the server as predict decodes the file
            buffer = io.BytesIO()
            Image.open(path).convert("RGB").save(buffer, format="PNG")
            images.append(buffer.getvalue())

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = start_server(args.model, port, args.max_batch, args.max_wait_ms)
        try:

            def run(bad_every: int) -> LoadRun:
                return asyncio.run(
                    load(port, images, args.clients, args.requests, args.time_limit, bad_every)
                )

            run(0)  # warm-up: the first batches pay for oneDNN's kernel choices
            offline, clean, mixed = [], [], []
            for _ in range(args.rounds):
                offline.append(offline_images_per_second(args.model, paths, args.requests))
                clean.append(run(0))
                mixed.append(run(5))
            rss = peak_rss_mb(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            exit_code = server.wait(timeout=60)

    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); clients in this process"
    )
    print(
        f"{args.images} demo images of {args.size} px, {args.clients} clients, {args.requests} "
        f"requests per run, max batch {args.max_batch}, max wait {args.max_wait_ms} ms, "
        f"{args.rounds} interleaved rounds (medians)"
    )
    offline_rate = statistics.median(offline)
    print(f"offline predict: {offline_rate:.1f} img/s")
    for name, runs in (("served", clean), ("served, 20% bad uploads", mixed)):
        rate = statistics.median(r.images_per_second for r in runs)
        ratio = rate / offline_rate  # a ratio of medians
        p50, p95, p99 = (statistics.median(r.percentile(q) for r in runs) for q in (50, 95, 99))
        failed = sum(r.good_failed for r in runs)
        client_share = statistics.median(r.client_cpu_seconds / r.seconds for r in runs)
        bad = sum(r.bad_sent for r in runs)
        refused = sum(r.bad_refused for r in runs)
        line = (
            f"{name}: {rate:.1f} img/s ({ratio:.0%} of offline), latency p50 {p50:.0f} ms, "
            f"p95 {p95:.0f} ms, p99 {p99:.0f} ms, good images failed {failed}, clients' CPU "
            f"{client_share:.0%} of one core"
        )
        if bad:
            line += f", bad uploads refused with 422: {refused} of {bad}"
        print(line)
    print(f"server peak RSS {rss:.0f} MB; exit code after SIGTERM {exit_code}")


if __name__ == "__main__":
    main()
