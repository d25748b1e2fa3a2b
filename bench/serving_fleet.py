"""Serving fleet benchmarks, each against a baseline measured in the same run (loopback, one Docker engine).

1. Warmup: the latency of the first 50 requests to a version just made AVAILABLE, with its
   `tf_serving_warmup_requests` replayed by the server, against the same model without them.
2. The proxy: 1-row predicts through nginx against straight to the same TF Serving host, at 1 and
   16 clients: the latency nginx adds.
Uses the TF Serving image the project would (real if present, else the stand-in). Bounded in count.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.serving.models import publish_copy, synthetic_images

from harness.docker_engine import ensure_engine
from harness.nginx import NginxBalancer, free_port
from tfship.release.serving_dir import ServingDir
from tfship.serving.balancer import Backend
from tfship.serving.client import ServingClient
from tfship.serving.container import ServingSpec, choose_image, reconcile_container
from tfship.serving.grpc_client import GrpcServingClient
from tfship.serving.rollout import LabelledServing, promoted, side_by_side

MODEL = "benchfleet"


def export_cnn(directory: Path, *, warmup: bool) -> Path:
    """The project's own CNN (untrained weights: latency does not depend on them), exported as training does."""
    from tfship.serving.warmup import write_warmup
    from tfship.training.model import INPUT_NAME, HParams, build_model, export_for_serving

    hparams = HParams()
    export_for_serving(build_model(hparams), hparams, directory)
    if warmup:
        rows = synthetic_images(32, seed=2)[0].astype(int).tolist()
        write_warmup(directory, model=MODEL, instances=rows, input_name=INPUT_NAME)
    return directory


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, int(0.99 * len(ordered)) - 1)], ordered[-1]


def first_requests(rest: ServingClient, version: int, rows: list, count: int = 50) -> list[float]:
    """Latencies (ms) of the first `count` sequential predicts pinned to `version`."""
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        code, body = rest.predict(rows, version=version)
        latencies.append((time.perf_counter() - began) * 1000)
        assert code == 200, body
    return latencies


def load(url: str, rows: list, clients: int, per_client: int) -> list[float]:
    """Latencies (ms) of `clients` x `per_client` 1-row predicts to `url`."""
    import requests

    payload = json.dumps({"instances": rows})
    latencies: list[float] = []

    def client() -> None:
        session = requests.Session()
        for _ in range(per_client):
            began = time.perf_counter()
            answer = session.post(f"{url}/v1/models/{MODEL}:predict", data=payload, timeout=60)
            latencies.append((time.perf_counter() - began) * 1000)
            assert answer.status_code == 200, answer.text

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def main() -> int:
    """Start one serving container and nginx, print the two tables."""
    import docker

    engine = ensure_engine()
    api = docker.APIClient(base_url=engine, version="auto")
    image = choose_image(api, build_standin=lambda: __import__("serving_standin.build").build.build_image(engine))
    with tempfile.TemporaryDirectory(prefix="tfship-fleet-bench-") as tmp:
        root = Path(tmp)
        models = {warm: export_cnn(root / f"m-{warm}", warmup=warm) for warm in (True, False)}
        serving_dir = ServingDir(root / "serving" / MODEL)
        publish_copy(models[True], serving_dir.path, 1)
        rest_port, grpc_port = free_port(), free_port()
        spec = ServingSpec(
            model=MODEL,
            serving_dir=str(serving_dir.path),
            host="bench",
            image=image,
            rest_port=rest_port,
            grpc_port=grpc_port,
            labelled=True,
        )
        grpc = GrpcServingClient(f"127.0.0.1:{grpc_port}", MODEL)
        rest = ServingClient(f"http://127.0.0.1:{rest_port}", MODEL)
        labelled = LabelledServing(serving_dir, MODEL, grpc.reload_config)
        labelled.write(promoted(1))
        action = reconcile_container(api, spec)
        nginx = None
        try:
            rest.wait_until_available(1, timeout_s=300)
            rows = synthetic_images(1, seed=1)[0].astype(int).tolist()
            print(f"serving fleet bench, image {image}")
            print("\n1. the project's CNN, first 50 requests after a version becomes AVAILABLE (ms)")
            results: dict[bool, list[float]] = {}
            firsts: dict[bool, list[float]] = {}
            for version, warm in ((2, False), (3, True), (4, False), (5, True), (6, False), (7, True)):
                publish_copy(models[warm], serving_dir.path, version)
                labelled.apply(side_by_side(version, version - 1))
                rest.wait_until_available(version, timeout_s=300)
                latencies = first_requests(rest, version, rows)
                results.setdefault(warm, []).extend(latencies)
                firsts.setdefault(warm, []).append(latencies[0])
                labelled.apply(promoted(version))
            for warm in (False, True):
                p50, p99, _ = _percentiles(results[warm])
                first = statistics.mean(firsts[warm])
                label = "with warmup   " if warm else "without warmup"
                print(f"   {label}  first request {first:7.1f}, then p50 {p50:6.1f} / p99 {p99:6.1f}")
            ratio = statistics.mean(firsts[True]) / statistics.mean(firsts[False])
            print(f"   first request, warmup / none: {ratio:.2f} (3 swaps each)")

            nginx = NginxBalancer(root / "nginx", [Backend("bench", "127.0.0.1", rest_port, grpc_port)]).start()
            print("\n2. 1-row predicts, through nginx vs direct (ms): p50 / p99")
            for clients in (1, 16):
                direct = load(rest.base_url, rows, clients, 200 // clients * 2)
                proxied = load(nginx.url, rows, clients, 200 // clients * 2)
                (d50, d99, _), (n50, n99, _) = _percentiles(direct), _percentiles(proxied)
                print(
                    f"   {clients:2d} clients: direct {d50:6.1f} / {d99:6.1f}, nginx {n50:6.1f} / {n99:6.1f}: "
                    f"nginx adds {n50 - d50:+.1f} ms at p50 ({n50 / d50:.2f}x)"
                )
        finally:
            if nginx is not None:
                nginx.stop()
            grpc.close()
            api.remove_container(action.container_id, force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
