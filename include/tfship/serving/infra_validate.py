"""Infra validation: a candidate loaded and queried in a throwaway TF Serving before any serving host sees it.

The candidate is copied from the storage root into a local scratch directory (the publication's
md5-checked transfer), mounted read-only into a container of the image the hosts run, under its
own name (`tfship-infra-<model>-<D>-<digest8>`, never deploy's `tfserving-<model>`), its own
labels and its own ports. The version must become AVAILABLE within a timeout (load retries off:
a local copy that failed once fails again), any warmup records are replayed by the server before
that, the `serving_default` signature must be the project's, the answers must be probabilities,
and the canary rows must match the candidate's offline probabilities. The container and the
scratch copy are removed afterwards, whatever happened.

Pure library: the Docker client is passed in (`docker.APIClient`, what `DockerHook.get_conn()` gives).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfship.constants import InfraCheck
from tfship.days import parse_day
from tfship.release.manifest import MANIFEST_FILE
from tfship.release.serving_dir import ModelVersion
from tfship.release.transfer import Source, TransferError, TransferPolicy
from tfship.serving.canary import CANARY_FILE, CanaryError, CanaryPolicy, Check, load_canary, run_canary
from tfship.serving.client import ServingClient, ServingError, VersionLoadFailed
from tfship.serving.container import (
    MANAGED_LABEL,
    MODEL_LABEL,
    ServingSpec,
    container_alive_check,
    copy_into,
    worker_network_mode,
)
from tfship.serving.infra_checks import (
    WARMUP_FILE,
    InfraValidationResult,
    count_warmup_records,
    probabilities_check,
    signature_check,
)

CONTAINER_PREFIX = "tfship-infra-"
MANAGED_VALUE = "infra-validation"  # not deploy's value: deploy's clean-up never touches these containers
CANDIDATE_LABEL = "tfship.candidate"
# The server's own verdict on a start-up load (the real server and the stand-in print the same words).
_START_FAILED = "Failed to start server"
_LOAD_FAILED = "did not become available"

log = logging.getLogger(__name__)


class InfraError(ServingError):
    """The validation itself could not run (Docker, ports, storage): no evidence against the candidate."""


@dataclass(frozen=True)
class InfraPolicy:
    """How long to wait and how strictly to compare; latency is the canary's business on the real hosts."""

    available_timeout_s: float = 300.0
    probability_tolerance: float = 1e-3
    canary: CanaryPolicy = field(
        default_factory=lambda: CanaryPolicy(
            concurrency=2, accuracy_floor=0.0, latency_budget_ms=120_000, request_timeout_s=120
        )
    )
    memory_limit: str | None = "2g"


def container_name(model: str, candidate: str) -> str:
    """`tfship-infra-<model>-<D>-<digest8>`: one per candidate, so a killed attempt's leftover is found again."""
    return f"{CONTAINER_PREFIX}{model}-{candidate.rstrip('/').rsplit('/', 1)[-1]}"


def free_ports(count: int) -> list[int]:
    """Loopback ports nobody listens on right now (held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def stage_candidate(source: Source, candidate: str, destination: Path) -> str:
    """Copy the candidate into `destination` with every md5 checked; return its digest (raises TransferError)."""
    from tfship.release.transfer import Transfer

    transfer = Transfer(source, candidate, policy=TransferPolicy(), rng=random.Random(), logger=log)
    try:
        manifest, raw = transfer.read_manifest()
        destination.mkdir(parents=True)
        transfer.fetch_all(manifest.files, destination, lambda entry: None)
        transfer.wait_for_syncs()
        (destination / MANIFEST_FILE).write_bytes(raw)
    finally:
        transfer.close()
    return manifest.digest


def _make_readable(root: Path) -> None:
    """Readable by the server whatever user the image runs as (mkdtemp makes the scratch dir 0700)."""
    for directory, _subdirs, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)


class _Run:
    """One validation: the scratch copy, the container, the checks so far (see `validate_candidate`)."""

    def __init__(self, api: Any, model: str, candidate: str, image: str, policy: InfraPolicy) -> None:
        self.api, self.model, self.candidate, self.image, self.policy = api, model, candidate, image, policy
        self.name = container_name(model, candidate)
        self.checks: list[Check] = []
        self.container_id: str | None = None
        self.started = time.monotonic()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.seconds[name] = round(now - since, 2)
        return now

    def start(self, base: Path, rest_port: int, grpc_port: int, worker_container: str = "") -> ServingClient:
        """A fresh container of the hosts' image on the scratch copy; a leftover of the same name goes first.

        From a worker in a container (`worker_container`), the server joins that container's network
        and the copy is copied in rather than mounted.
        """
        for container in self.api.containers(all=True, filters={"name": f"^/{self.name}$"}):
            self.api.remove_container(container["Id"], force=True)
        spec = ServingSpec(
            model=self.model,
            serving_dir=str(base),
            image=self.image,
            grpc_port=grpc_port,
            rest_port=rest_port,
            extra_flags=("--max_num_load_retries=0",),
            restart_policy="no",
            memory_limit=self.policy.memory_limit,
            network_mode=worker_network_mode(worker_container),
            copy_in=bool(worker_container),
        )
        labels = {MODEL_LABEL: self.model, MANAGED_LABEL: MANAGED_VALUE, CANDIDATE_LABEL: self.candidate}
        created = self.api.create_container(**(spec.create_kwargs(self.api) | {"name": self.name, "labels": labels}))
        self.container_id = created["Id"]
        if spec.copy_in:
            copy_into(self.api, self.container_id, base, spec.mount_path)
        self.api.start(self.container_id)
        timeout = self.policy.canary.request_timeout_s
        return ServingClient(f"http://127.0.0.1:{rest_port}", self.model, timeout_s=timeout)

    def server_log(self, lines: int = 40) -> list[str]:
        if self.container_id is None:
            return []
        with contextlib.suppress(Exception):  # the log is a courtesy; the checks already say what failed
            text = self.api.logs(self.container_id, tail=lines).decode("utf-8", "replace")
            return [line for line in text.splitlines() if line.strip()]
        return []

    def wait_for_version(self, client: ServingClient, version: int) -> bool:
        """LOAD and AVAILABLE checks; False when the candidate never became AVAILABLE."""
        timeout = self.policy.available_timeout_s
        limit = f"AVAILABLE within {timeout:.0f}s"
        began = time.monotonic()
        deadline = began + timeout
        try:
            alive = container_alive_check(self.api, self.container_id)
            client.wait_until_answering(timeout_s=timeout, check_alive=alive)
            client.wait_until_available(version, timeout_s=max(1.0, deadline - time.monotonic()))
        except VersionLoadFailed as err:
            self.checks.append(Check(InfraCheck.LOAD, False, f"{err.error_code}: {err.error_message}", "loads"))
            return False
        except ServingError as err:
            failed = next((line for line in self.server_log() if _LOAD_FAILED in line), None)
            if failed is not None:
                reason = failed[failed.find(_START_FAILED) :] if _START_FAILED in failed else failed
                self.checks.append(Check(InfraCheck.LOAD, False, reason.strip()[:600], "loads"))
                return False
            if "did not answer" in str(err) or "not AVAILABLE" in str(err):  # the client's two timeouts
                self.checks.append(Check(InfraCheck.AVAILABLE, False, str(err)[:600], limit))
                return False
            raise InfraError(f"the throwaway server {self.name} stopped for another reason: {err}") from err
        waited = time.monotonic() - began
        self.checks.append(Check(InfraCheck.LOAD, True, "loaded", "loads"))
        self.checks.append(Check(InfraCheck.AVAILABLE, True, f"AVAILABLE after {waited:.1f}s", limit))
        return True

    def remove(self) -> None:
        """Kill and remove the container (nothing to drain: no client but us ever spoke to it)."""
        if self.container_id is not None:
            self.api.remove_container(self.container_id, force=True)
            log.info("removed throwaway container %s (%s)", self.name, self.container_id[:12])


def _stage(run: _Run, source: Source, candidate: str, destination: Path) -> str | None:
    """STAGE: the candidate's digest once copied and checked; None when a file does not match its manifest."""
    limit = "every file matches MANIFEST.json"
    try:
        digest = stage_candidate(source, candidate, destination)
    except TransferError as err:
        if not err.check.permanent:  # the network or the deadline: the candidate may be fine
            raise InfraError(f"the candidate could not be read: {err}") from err
        run.checks.append(Check(InfraCheck.STAGE, False, str(err)[:600], limit))
        return None
    run.checks.append(Check(InfraCheck.STAGE, True, f"digest {digest}", limit))
    return digest


def validate_candidate(
    api: Any,
    *,
    source: Source,
    candidate: str,
    model: str,
    day: str,
    image: str,
    work_root: Path,
    policy: InfraPolicy | None = None,
    run_id: str | None = None,
    worker_container: str = "",
) -> InfraValidationResult:
    """Stage, serve and query the candidate in a throwaway container; raises InfraError only when it could not run."""
    policy = policy or InfraPolicy()
    version = int(ModelVersion.of(parse_day(day)))
    run = _Run(api, model, candidate, image, policy)
    digest, warmup, canary = None, None, None
    work_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="infra-", dir=work_root))
    base = scratch / model  # the model's base path inside the container: /models/<model>/<version>/
    try:
        digest = _stage(run, source, candidate, base / str(version))
        mark = run.lap("stage", run.started)
        if digest is not None:
            _make_readable(scratch)
            warmup = count_warmup_records(base / str(version) / WARMUP_FILE)
            client = run.start(base, *free_ports(2), worker_container=worker_container)
            mark = run.lap("start", mark)
            try:
                if run.wait_for_version(client, version):
                    warmed = "no warmup file in the candidate" if warmup is None else f"{warmup} record(s) replayed"
                    run.checks.append(Check(InfraCheck.WARMUP, True, warmed, "every record answered before AVAILABLE"))
                    mark = run.lap("available", mark)
                    canary = _query(run, client, version, base / str(version))
                    run.lap("checks", mark)
            finally:
                client.close()
    finally:
        log_tail = tuple(run.server_log()) if not all(check.passed for check in run.checks) else ()
        mark = time.monotonic()
        try:
            run.remove()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            run.lap("cleanup", mark)
    run.seconds["total"] = round(time.monotonic() - run.started, 2)
    return InfraValidationResult(
        model=model,
        day=day,
        candidate=candidate,
        digest=digest,
        image=image,
        version=version,
        container=run.name,
        checks=tuple(run.checks),
        seconds=run.seconds,
        warmup_records=warmup,
        canary=canary,
        log_tail=log_tail,
        run_id=run_id,
    )


def _query(run: _Run, client: ServingClient, version: int, version_dir: Path) -> dict | None:
    """SIGNATURE, PROBABILITIES and CANARY on the AVAILABLE version; returns the canary verdict."""
    import requests

    try:
        response = client.session.get(f"{client.model_url(version)}/metadata", timeout=client.timeout_s)
        run.checks.append(signature_check(response.json() if response.status_code == 200 else {}))
        canary_set = load_canary(version_dir / CANARY_FILE)
    except CanaryError as err:
        run.checks.append(Check(InfraCheck.CANARY, False, str(err), f"{CANARY_FILE} in the candidate"))
        return None
    except (requests.RequestException, ValueError) as err:
        run.checks.append(Check(InfraCheck.SIGNATURE, False, f"metadata call failed: {err}", "an answer"))
        return None
    rows = canary_set.instances[: run.policy.canary.batch_size]
    try:
        code, body = client.predict(rows, version=version, signature_name=canary_set.signature_name)
    except requests.RequestException as err:
        code, body = 0, {"error": f"{type(err).__name__}: {err}"}
    run.checks.append(probabilities_check(code, body, len(rows), run.policy.probability_tolerance))
    verdict = run_canary(client.base_url, run.model, version, canary_set, run.policy.canary)
    failed = [check for check in verdict.checks if not check.passed]
    observed = (
        f"{verdict.rows} rows, argmax agreement {verdict.argmax_agreement}, max |diff| {verdict.max_abs_diff}"
        if not failed
        else "; ".join(f"{check.name}: {check.observed} (limit {check.limit})" for check in failed)
    )
    limit = f"answers within {run.policy.canary.max_abs_diff:g} of the offline probabilities"
    run.checks.append(Check(InfraCheck.CANARY, not failed, observed, limit))
    return verdict.to_dict()
