"""REST vs gRPC predict against one TF-Serving stand-in on loopback: latency and throughput.

For 1-row and 64-row requests at 1, 16 and 64 concurrent clients (each client its own keep-alive
connection or gRPC channel), it prints p50/p99 latency, req/s, failures and refused connections,
and the ratio of each gRPC figure to REST's measured in the same run. Every cell is bounded by a
request count and a time limit. The server is a local stand-in process (default) or a container
started beforehand (`--rest-port`/`--grpc-port`).
Usage: python bench/serving_protocols.py [--requests 600] [--seconds 15] [--clients 1,16,64]
       [--rows 1,64] [--protocols rest,grpc]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT_ROOT), str(PROJECT_ROOT / "include")]
MODEL = "bench"


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_standin(base: Path, rest_port: int, grpc_port: int, log: Path) -> subprocess.Popen:
    """The stand-in as a local process; returns once its REST port is open."""
    env = dict(os.environ, PYTHONPATH=f"{PROJECT_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving_standin.server",
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            f"--model_name={MODEL}",
            f"--model_base_path={base}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", rest_port)) == 0:
                return process
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"the stand-in did not open its REST port:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def rest_caller(port: int, rows: list) -> Callable[[], Callable[[], None]]:
    """Per client: a keep-alive connection posting one pre-encoded row-format predict."""
    body = json.dumps({"instances": rows}).encode()
    path = f"/v1/models/{MODEL}:predict"

    def client() -> Callable[[], None]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def call() -> None:
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")

        return call

    return client


def grpc_caller(port: int, rows: list) -> Callable[[], Callable[[], None]]:
    """Per client: its own channel sending one pre-built PredictRequest."""
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["input_image"].CopyFrom(tf.make_tensor_proto(np.asarray(rows, np.float32)))

    def client() -> Callable[[], None]:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

        def call() -> None:
            stub.Predict(request, timeout=60)

        return call

    return client


def measure(make_client: Callable[[], Callable[[], None]], clients: int, requests: int, seconds: float) -> dict:
    """Run `clients` threads until `requests` are sent or `seconds` pass; latency percentiles and rate."""
    latencies: list[float] = []
    failures: list[str] = []
    refused = 0
    sent = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        nonlocal sent, refused
        call = make_client()
        while time.monotonic() < deadline:
            with lock:
                if sent >= requests:
                    return
                sent += 1
            started = time.perf_counter()
            try:
                call()
            except (ConnectionRefusedError, ConnectionResetError) as err:
                with lock:
                    refused += 1
                    failures.append(type(err).__name__)
                call = make_client()
                continue
            except Exception as err:  # noqa: BLE001 - every failure is counted and shown
                with lock:
                    failures.append(f"{type(err).__name__}: {str(err)[:120]}")
                continue
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "ok": len(latencies),
        "failed": len(failures),
        "refused": refused,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "rps": len(latencies) / wall,
        "first_failure": failures[:1],
    }


def main(argv: list[str] | None = None) -> int:
    """Start (or reach) a stand-in, measure every cell, print the table and the gRPC/REST ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="requests per cell at most")
    parser.add_argument("--seconds", type=float, default=15, help="seconds per cell at most")
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--rows", default="1,64")
    parser.add_argument("--protocols", default="rest,grpc")
    parser.add_argument("--rest-port", type=int, help="an already running server's REST port (model 'bench')")
    parser.add_argument("--grpc-port", type=int, help="an already running server's gRPC port")
    args = parser.parse_args(argv)
    from tests.serving.models import export_model, synthetic_images

    protocols = args.protocols.split(",")
    process = None
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        if args.rest_port:
            rest_port, grpc_port = args.rest_port, args.grpc_port or 8500
        else:
            base = Path(tmp) / MODEL
            export_model(base / "1", "good")
            rest_port, grpc_port = free_port(), free_port()
            process = start_standin(base, rest_port, grpc_port, Path(tmp) / "standin.log")
        try:
            results: dict[tuple[str, int, int], dict[str, Any]] = {}
            for rows in (int(r) for r in args.rows.split(",")):
                images, _ = synthetic_images(rows, seed=5)
                payload = images.astype(int).tolist()
                makers = {"rest": rest_caller(rest_port, payload)}
                if "grpc" in protocols:
                    makers["grpc"] = grpc_caller(grpc_port, payload)
                for clients in (int(c) for c in args.clients.split(",")):
                    for protocol in protocols:
                        makers[protocol]()()  # warm: the first call traces nothing new, opens the path
                        cell = measure(makers[protocol], clients, args.requests, args.seconds)
                        results[(protocol, rows, clients)] = cell
                        print(
                            f"{protocol:4} rows={rows:<3} clients={clients:<3} ok={cell['ok']:<5} "
                            f"failed={cell['failed']:<3} refused={cell['refused']:<3} p50={cell['p50_ms']:7.1f} ms "
                            f"p99={cell['p99_ms']:7.1f} ms {cell['rps']:7.1f} req/s {cell['first_failure']}",
                            flush=True,
                        )
        finally:
            if process is not None:
                process.kill()
                process.wait()
    if "grpc" in protocols and "rest" in protocols:
        print("\ngRPC / REST in the same run (p50, p99: lower is better; req/s: higher is better)")
        for (protocol, rows, clients), cell in results.items():
            if protocol != "grpc":
                continue
            rest = results[("rest", rows, clients)]
            print(
                f"rows={rows:<3} clients={clients:<3} p50 x{cell['p50_ms'] / rest['p50_ms']:.2f} "
                f"p99 x{cell['p99_ms'] / rest['p99_ms']:.2f} req/s x{cell['rps'] / max(rest['rps'], 1e-9):.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
