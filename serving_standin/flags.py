"""The `tensorflow_model_server` flags the stand-in reads, parsed the way the real binary parses them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

EXIT_BAD_FLAG = 255  # what tensorflow_model_server returns for a bad value of a known flag

# Real tensorflow_model_server flags and their types: a bad value exits as the real binary does,
# even for the flags the stand-in then ignores (batching, threads, gRPC).
FLAG_TYPES: dict[str, type] = {
    "port": int,
    "rest_api_port": int,
    "model_name": str,
    "model_base_path": str,
    "model_config_file": str,
    "model_config_file_poll_wait_seconds": int,
    "file_system_poll_wait_seconds": int,
    "max_num_load_retries": int,
    "load_retry_interval_micros": int,
    "allow_version_labels_for_unavailable_models": bool,
    "rest_api_timeout_in_ms": int,
    "rest_api_num_threads": int,
    "enable_batching": bool,
    "batching_parameters_file": str,
    "monitoring_config_file": str,
    "tensorflow_intra_op_parallelism": int,
    "tensorflow_inter_op_parallelism": int,
    "tensorflow_session_parallelism": int,
    "saved_model_tags": str,
    "enable_model_warmup": bool,
    "num_load_threads": int,
    "num_unload_threads": int,
    "rest_api_enable_cors_support": bool,
    "grpc_channel_arguments": str,
    "grpc_socket_path": str,
    "model_base_path_prefix": str,
}
FLAG_DEFAULTS: dict[str, Any] = {
    "port": 8500,
    "rest_api_port": 0,
    "model_name": "default",
    "model_base_path": "",
    "model_config_file": "",
    "model_config_file_poll_wait_seconds": 0,
    "file_system_poll_wait_seconds": 1,
    "max_num_load_retries": 5,
    "load_retry_interval_micros": 60_000_000,
    "allow_version_labels_for_unavailable_models": False,
    "saved_model_tags": "serve",
}


class FlagError(ValueError):
    """A known flag with a value of the wrong type."""


def parse_flags(argv: list[str], warn: Callable[[str], None]) -> dict[str, Any]:
    """`--name=value` flags, later copies winning; unknown flags only warned about, like the real server."""
    flags = dict(FLAG_DEFAULTS)
    for argument in argv:
        if not argument.startswith("-"):
            warn(f"ignoring positional argument {argument!r}")
            continue
        name, has_value, value = argument.lstrip("-").partition("=")
        kind = FLAG_TYPES.get(name)
        if kind is None:
            warn(f"unknown flag {argument!r} ignored")
            continue
        if kind is bool:
            if not has_value or value.lower() in ("true", "1"):
                flags[name] = True
            elif value.lower() in ("false", "0"):
                flags[name] = False
            else:
                raise FlagError(f"flag --{name}: {value!r} is not a boolean")
        elif kind is int:
            try:
                flags[name] = int(value)
            except ValueError:
                raise FlagError(f"flag --{name}: {value!r} is not an integer") from None
        else:
            if not has_value:
                raise FlagError(f"flag --{name} needs a value (--{name}=...)")
            flags[name] = value
    return flags
