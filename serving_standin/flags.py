"""The `tensorflow_model_server` flags the stand-in reads, parsed the way the real binary parses them."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

EXIT_BAD_FLAG = 255  # what tensorflow_model_server returns for a bad value of a known flag

# Every flag of tensorflow_model_server 2.20 (main.cc) and its type: a bad value exits as the real
# binary does, even for the flags the stand-in then ignores (batching, TPU, TFLite, SSL).
FLAG_TYPES: dict[str, type] = {
    **dict.fromkeys(
        (
            "port",
            "rest_api_port",
            "rest_api_num_threads",
            "rest_api_timeout_in_ms",
            "model_config_file_poll_wait_seconds",
            "num_load_threads",
            "num_unload_threads",
            "max_num_load_retries",
            "load_retry_interval_micros",
            "file_system_poll_wait_seconds",
            "tensorflow_session_parallelism",
            "tensorflow_intra_op_parallelism",
            "tensorflow_inter_op_parallelism",
            "grpc_max_threads",
            "num_request_iterations_for_warmup",
            "num_tflite_pools",
            "num_tflite_interpreters_per_pool",
        ),
        int,
    ),
    **dict.fromkeys(
        (
            "rest_api_enable_cors_support",
            "enable_batching",
            "allow_version_labels_for_unavailable_models",
            "enable_per_model_batching_parameters",
            "flush_filesystem_caches",
            "use_alts_credentials",
            "enable_model_warmup",
            "version",
            "remove_unused_fields_from_bundle_metagraph",
            "prefer_tflite_model",
            "enable_signature_method_name_check",
            "xla_cpu_compilation_enabled",
            "xla_gpu_compilation_enabled",
            "enable_profiler",
            "skip_initialize_tpu",
            "enable_grpc_healthcheck_service",
            "enable_serialization_as_tensor_content",
        ),
        bool,
    ),
    **dict.fromkeys(
        (
            "grpc_socket_path",
            "batching_parameters_file",
            "model_config_file",
            "model_name",
            "model_base_path",
            "tensorflow_session_config_file",
            "ssl_config_file",
            "platform_config_file",
            "saved_model_tags",
            "grpc_channel_arguments",
            "monitoring_config_file",
            "thread_pool_factory_config_file",
            "mixed_precision",
            "model_base_path_prefix",
        ),
        str,
    ),
    "per_process_gpu_memory_fraction": float,
}
_CPUS = os.cpu_count() or 1
# server.h's defaults (main.cc leaves rest_api_port at 0; the image's entrypoint sets 8501).
FLAG_DEFAULTS: dict[str, Any] = {
    "port": 8500,
    "rest_api_port": 0,
    "rest_api_num_threads": 4 * _CPUS,
    "rest_api_timeout_in_ms": 30_000,
    "grpc_max_threads": 4 * _CPUS,
    "model_name": "default",
    "model_base_path": "",
    "model_config_file": "",
    "model_config_file_poll_wait_seconds": 0,
    "file_system_poll_wait_seconds": 1,
    "max_num_load_retries": 5,
    "load_retry_interval_micros": 60_000_000,
    "num_load_threads": 0,
    "allow_version_labels_for_unavailable_models": False,
    "enable_model_warmup": True,
    "num_request_iterations_for_warmup": 0,  # used only if > 0; the warmup default is 1
    "monitoring_config_file": "",
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
        elif kind in (int, float):
            try:
                flags[name] = kind(value)
            except ValueError:
                raise FlagError(f"flag --{name}: {value!r} is not a {kind.__name__}") from None
        else:
            if not has_value:
                raise FlagError(f"flag --{name} needs a value (--{name}=...)")
            flags[name] = value
    return flags
