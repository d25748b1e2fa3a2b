"""What tensorflow_model_server is told: its flags (checked, since it only warns about unknown ones) and
the model config file (ModelServerConfig text: version policy and labels)."""

from __future__ import annotations

from collections.abc import Sequence

from tfship.constants import VersionPolicy
from tfship.errors import ConfigError
from tfship.paths import check_name

# Flags of tensorflow_model_server (2.x main.cc); it only warns about others, so a typo would
# silently change nothing: extra flags are checked against this list.
TF_SERVING_FLAGS = frozenset(
    {
        "port",
        "grpc_socket_path",
        "rest_api_port",
        "rest_api_num_threads",
        "rest_api_timeout_in_ms",
        "rest_api_enable_cors_support",
        "enable_batching",
        "allow_version_labels_for_unavailable_models",
        "batching_parameters_file",
        "enable_per_model_batching_parameters",
        "model_config_file",
        "model_config_file_poll_wait_seconds",
        "model_name",
        "model_base_path",
        "max_num_load_retries",
        "load_retry_interval_micros",
        "file_system_poll_wait_seconds",
        "flush_filesystem_caches",
        "tensorflow_session_parallelism",
        "tensorflow_intra_op_parallelism",
        "tensorflow_inter_op_parallelism",
        "use_alts_credentials",
        "ssl_config_file",
        "platform_config_file",
        "per_process_gpu_memory_fraction",
        "saved_model_tags",
        "grpc_channel_arguments",
        "grpc_max_threads",
        "enable_model_warmup",
        "num_request_iterations_for_warmup",
        "version",
        "monitoring_config_file",
        "remove_unused_fields_from_bundle_metagraph",
        "prefer_tflite_model",
        "num_tflite_pools",
        "num_tflite_interpreters_per_pool",
        "enable_signature_method_name_check",
        "xla_cpu_compilation_enabled",
        "enable_profiler",
        "thread_pool_factory_config_file",
        "mixed_precision",
        "skip_initialize_tpu",
        "num_load_threads",
        "num_unload_threads",
        "tensorflow_session_config_file",
        "model_base_path_prefix",
        "enable_grpc_healthcheck_service",
    }
)
# Set through the spec's own fields, so a second copy in extra_flags would silently win or lose.
SPEC_OWNED_FLAGS = frozenset(
    {"port", "rest_api_port", "model_name", "model_base_path", "model_config_file", "file_system_poll_wait_seconds"}
)


def validate_flags(flags: Sequence[str]) -> tuple[str, ...]:
    """Refuse flags TF Serving does not know (it would ignore them) or that the spec already sets."""
    checked = []
    for flag in flags:
        name = flag.removeprefix("--").partition("=")[0] if flag.startswith("--") else ""
        if not name:
            raise ConfigError(f"TF Serving flag {flag!r} must look like --name=value")
        if name not in TF_SERVING_FLAGS:
            raise ConfigError(f"TF Serving flag {flag!r} is unknown: the server would only warn and ignore it")
        if name in SPEC_OWNED_FLAGS:
            raise ConfigError(f"TF Serving flag {flag!r} is set by the serving spec; use its field instead")
        checked.append(flag)
    return tuple(checked)


def render_model_config(
    model: str,
    *,
    policy: VersionPolicy | str = VersionPolicy.LATEST,
    versions: Sequence[int] = (),
    num_versions: int = 1,
    labels: dict[str, int] | None = None,
) -> str:
    """ModelServerConfig text for one model mounted at /models/<model> (policy latest/all/specific)."""
    check_name("model", model)
    if policy == VersionPolicy.LATEST:
        policy_text = f"latest {{ num_versions: {int(num_versions)} }}"
    elif policy == VersionPolicy.ALL:
        policy_text = "all {}"
    elif policy == VersionPolicy.SPECIFIC:
        if not versions:
            raise ConfigError("the specific version policy needs at least one version")
        policy_text = "specific { " + " ".join(f"versions: {int(v)}" for v in versions) + " }"
    else:
        raise ConfigError(f"version policy {policy!r} is not latest, all or specific")
    label_text = "".join(
        f"\n    version_labels {{ key: '{key}' value: {int(value)} }}" for key, value in (labels or {}).items()
    )
    return (
        "model_config_list {\n  config {\n"
        f"    name: '{model}'\n    base_path: '/models/{model}'\n    model_platform: 'tensorflow'\n"
        f"    model_version_policy {{ {policy_text} }}{label_text}\n  }}\n}}\n"
    )
