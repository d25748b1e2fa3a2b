"""A TF-Serving-compatible REST server for SavedModels, for machines where tensorflow/serving cannot be pulled.

It follows TFSERVING_CONTRACT.md. This module is the `tensorflow_model_server` entry point: flags,
model configs, one manager per model, the start-up wait (the REST port stays closed until every
model has a version loaded), the file-system poller and the REST server. gRPC (`--port`) is
parsed but not served: this project speaks REST only.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

from serving_standin.flags import EXIT_BAD_FLAG, FlagError, parse_flags
from serving_standin.model_config import ModelConfig, VersionPolicy, parse_model_config
from serving_standin.models import ModelManager, ServingState, log
from serving_standin.rest import make_server


def model_configs(flags: dict[str, Any]) -> list[ModelConfig]:
    """From `--model_config_file` (which overrides name/base path) or `--model_name`/`--model_base_path`."""
    if flags["model_config_file"]:
        with open(flags["model_config_file"], encoding="utf-8") as handle:
            return parse_model_config(handle.read())
    if not flags["model_base_path"]:
        raise ValueError("neither --model_config_file nor --model_base_path is set")
    return [ModelConfig(flags["model_name"], flags["model_base_path"].rstrip("/") or "/", VersionPolicy())]


def _wait_for_first_versions(managers: dict[str, ModelManager], poll_wait: int) -> bool:
    """Poll until every model serves a version; False when one cannot load anything."""
    log(f"waiting for a loaded version of {', '.join(sorted(managers))}; the REST port stays closed until then")
    while True:
        for manager in managers.values():
            if not manager.has_available():
                manager.poll()
        if all(manager.has_available() for manager in managers.values()):
            return True
        for manager in managers.values():
            error = manager.all_failed()
            if error:
                log(f"ERROR: model {manager.name} failed to load at start-up: {error}")
                return False
        time.sleep(max(poll_wait, 1))


def _start_poller(managers: dict[str, ModelManager], poll_wait: int) -> None:
    """A daemon thread that polls every model's base path every `poll_wait` seconds."""

    def keep_polling() -> None:
        while True:
            time.sleep(poll_wait)
            for manager in managers.values():
                try:
                    manager.poll()
                except Exception as err:  # noqa: BLE001 - a poll must never kill the poller
                    log(f"poll of model {manager.name} failed: {err}")

    threading.Thread(target=keep_polling, name="file-system-poll", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Parse flags, load every model's first version, then open the REST port and keep polling."""
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
        log(f"ERROR: invalid model config: {err}")
        return 1
    if not flags["rest_api_port"]:
        log("WARNING: --rest_api_port is 0: no REST API (the stand-in serves REST only)")
    managers = {
        config.name: ModelManager(
            config,
            max_load_retries=flags["max_num_load_retries"],
            load_retry_interval_s=flags["load_retry_interval_micros"] / 1e6,
            tags=[tag for tag in flags["saved_model_tags"].split(",") if tag],
        )
        for config in configs
    }
    poll_wait = flags["file_system_poll_wait_seconds"]
    if not _wait_for_first_versions(managers, poll_wait):
        return 1
    if poll_wait > 0:
        _start_poller(managers, poll_wait)
    if not flags["rest_api_port"]:
        threading.Event().wait()
    state = ServingState(managers, flags["allow_version_labels_for_unavailable_models"])
    server = make_server(flags["rest_api_port"], state)
    log(f"Exporting HTTP/REST API at:localhost:{flags['rest_api_port']} ...")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
