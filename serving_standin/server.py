"""A TF-Serving-compatible server for SavedModels, for machines where tensorflow/serving cannot be pulled.

It follows TFSERVING_CONTRACT.md and TF Serving 2.20's Server::BuildAndStart. This module is the
`tensorflow_model_server` entry point: flags, the first model config (its version labels checked
before any model loads, as ServerCore::Create does), the file-system poller, the start-up wait (no
port opens until every model has a version loaded), the model-config poller, gRPC on `--port` and
REST on `--rest_api_port`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from serving_standin.core import ServingCore
from serving_standin.flags import EXIT_BAD_FLAG, FlagError, parse_flags
from serving_standin.model_config import ModelConfig, VersionPolicy, parse_model_config
from serving_standin.models import LoadQueue, ModelManager, Servable, ServingError, log
from serving_standin.rest import make_server

NUM_INITIAL_LOAD_THREADS = 4 * (os.cpu_count() or 1)  # ServerCore::Options' default


def model_configs(flags: dict[str, Any]) -> list[ModelConfig]:
    """From `--model_config_file` (which overrides name/base path) or `--model_name`/`--model_base_path`."""
    if flags["model_config_file"]:
        with open(flags["model_config_file"], encoding="utf-8") as handle:
            return parse_model_config(handle.read())
    if not flags["model_base_path"]:
        raise ValueError("Both server_options.model_base_path and server_options.model_config_file are empty!")
    return [ModelConfig(flags["model_name"], flags["model_base_path"].rstrip("/") or "/", VersionPolicy())]


def _every(seconds: int, name: str, work: Callable[[], None]) -> None:
    """A daemon thread running `work` every `seconds` (PeriodicFunction)."""

    def loop() -> None:
        while not stop.wait(seconds):
            work()

    stop = threading.Event()
    threading.Thread(target=loop, name=name, daemon=True).start()


def _config_poll(core: ServingCore, path: str) -> Callable[[], None]:
    """Server::PollFilesystemAndReloadConfig: read the file, apply it, log (never raise) a failure."""

    def poll() -> None:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as err:
            log(f"ERROR: Failed to read ModelServerConfig file: {err}")
            return
        try:
            core.reload_config_text(text)
        except ServingError as err:
            log(f"ERROR: PollFilesystemAndReloadConfig failed to ReloadConfig: {err.message}")

    return poll


def build_core(flags: dict[str, Any], loads: LoadQueue) -> ServingCore:
    """The ServingCore with managers that load, retry and warm up as the flags say."""
    tags = [tag for tag in flags["saved_model_tags"].split(",") if tag]
    iterations = flags["num_request_iterations_for_warmup"]

    def make_manager(config: ModelConfig) -> ModelManager:
        warmup: Callable[[str, Servable], None] | None = None
        if flags["enable_model_warmup"]:
            from serving_standin.warmup import run_warmup

            def warmup(path: str, servable: Servable) -> None:
                run_warmup(config.name, path, servable, iterations)

        return ModelManager(
            config,
            loads=loads,
            max_load_retries=flags["max_num_load_retries"],
            load_retry_interval_s=flags["load_retry_interval_micros"] / 1e6,
            tags=tags,
            warmup=warmup,
        )

    return ServingCore(
        make_manager,
        allow_unavailable_labels=flags["allow_version_labels_for_unavailable_models"],
        predict_threads=flags["rest_api_num_threads"],
        predict_timeout_ms=flags["rest_api_timeout_in_ms"],
    )


def _fail(error: ServingError) -> int:
    log(f"Failed to start server. Error: {error.code}: {error.message}")
    return EXIT_BAD_FLAG  # main() returns -1


def main(argv: list[str] | None = None) -> int:
    """Flags, first config, start-up wait, pollers, then gRPC and REST."""
    # Like the real binary: SIGTERM does nothing, `docker stop` ends in SIGKILL.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        flags = parse_flags(sys.argv[1:] if argv is None else argv, lambda m: log(f"WARNING: {m}"))
    except FlagError as err:
        log(f"ERROR: {err}")
        return EXIT_BAD_FLAG
    try:
        configs = model_configs(flags)
    except (OSError, ValueError) as err:
        return _fail(ServingError("INVALID_ARGUMENT", str(err)))
    if flags["monitoring_config_file"]:
        log("WARNING: --monitoring_config_file: the stand-in exports no Prometheus metrics")
    loads = LoadQueue(NUM_INITIAL_LOAD_THREADS)
    core = build_core(flags, loads)
    try:
        core.reload_config(configs)  # labels are checked before any version loads, as ServerCore::Create
    except ServingError as err:
        return _fail(err)
    poll_wait = flags["file_system_poll_wait_seconds"]
    if poll_wait > 0:  # 0: the first poll only; negative: none after it (the real flag's meaning)
        _every(poll_wait, "file-system-poll", core.poll_all)
    models = ", ".join(sorted(core.managers))
    log(f"waiting for a loaded version of {models}; the REST port stays closed until then (the gRPC port too)")
    try:
        core.wait_until_available(sorted(core.managers))
    except ServingError as err:
        return _fail(err)
    loads.set_threads(flags["num_load_threads"])
    config_poll_wait = flags["model_config_file_poll_wait_seconds"]
    if flags["model_config_file"] and config_poll_wait > 0:
        _every(config_poll_wait, "model-config-poll", _config_poll(core, flags["model_config_file"]))
    grpc_server = None  # kept referenced: a collected grpc.Server stops serving
    if flags["port"]:
        from serving_standin.grpc_api import start_grpc_server

        try:
            grpc_server = start_grpc_server(core, flags["port"], flags["grpc_max_threads"])
        except (ServingError, RuntimeError) as err:
            return _fail(ServingError("INVALID_ARGUMENT", f"Failed to BuildAndStart gRPC server: {err}"))
    if not flags["rest_api_port"]:
        threading.Event().wait()
    if flags["rest_api_port"] == flags["port"]:
        log("ERROR: server_options.http_port cannot be same as grpc_port. Skipped exporting HTTP/REST API.")
        threading.Event().wait()
    server = make_server(flags["rest_api_port"], core)
    log(f"Exporting HTTP/REST API at:localhost:{flags['rest_api_port']} ...")
    server.serve_forever()
    del grpc_server
    return 0


if __name__ == "__main__":
    sys.exit(main())
