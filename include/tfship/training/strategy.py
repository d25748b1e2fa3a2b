"""One factory for the tf.distribute strategy a training process uses.

- TF_CONFIG naming several workers: MultiWorkerMirroredStrategy (one process per host).
- GPUs visible: MirroredStrategy over all of them.
- No GPU: MirroredStrategy over N logical CPU devices, so the distributed path (replicas,
  all-reduce, per-replica batches) always runs, even on a laptop or in CI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tfship.constants import StrategyKind
from tfship.errors import ConfigError


@dataclass(frozen=True)
class StrategyPlan:
    """What the factory decided, before any TensorFlow import."""

    kind: StrategyKind
    replicas_per_worker: int
    workers: int = 1
    task_index: int = 0

    @property
    def replicas(self) -> int:
        """Replicas across the whole cluster."""
        return self.replicas_per_worker * self.workers


def parse_tf_config(raw: str | None) -> dict | None:
    """The TF_CONFIG JSON, checked; None when unset or naming a single worker."""
    if not raw:
        return None
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        task_type, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"TF_CONFIG is malformed ({type(err).__name__}: {err}): {raw[:200]!r}") from None
    if not isinstance(workers, list) or not workers or not all(isinstance(w, str) and ":" in w for w in workers):
        raise ConfigError(f"TF_CONFIG cluster.worker must be a non-empty list of host:port, got {workers!r}")
    # Worker 0 is the chief here (it exports and uploads); a separate chief role would make two.
    if "chief" in config["cluster"] or task_type == "chief":
        raise ConfigError(
            "TF_CONFIG with a 'chief' role is not supported: list every host under cluster.worker "
            "(worker 0 exports and uploads)"
        )
    if task_type != "worker":
        raise ConfigError(f"TF_CONFIG task.type must be 'worker', got {task_type!r}")
    if not 0 <= index < len(workers):
        raise ConfigError(f"TF_CONFIG task.index {index} is outside the {len(workers)} workers")
    return config if len(workers) > 1 else None


def tf_config_workers(raw: str | None) -> int:
    """How many workers a TF_CONFIG names (1 when unset)."""
    config = parse_tf_config(raw)
    return len(config["cluster"]["worker"]) if config else 1


def plan_strategy(*, replicas: int, gpus: int, tf_config: str | None) -> StrategyPlan:
    """Decide the strategy from the environment (pure: testable without TensorFlow)."""
    if replicas < 1:
        raise ConfigError(f"replicas must be at least 1, got {replicas}")
    cluster = parse_tf_config(tf_config)
    if cluster is not None:
        workers = len(cluster["cluster"]["worker"])
        return StrategyPlan(StrategyKind.MULTI_WORKER, max(gpus, 1), workers, int(cluster["task"]["index"]))
    if gpus > 0:
        return StrategyPlan(StrategyKind.GPUS, gpus)
    return StrategyPlan(StrategyKind.CPU_REPLICAS, replicas)


def per_replica_batch(plan: StrategyPlan, global_batch: int) -> int:
    """Split the global batch evenly over the replicas (global = per-replica x replicas)."""
    if plan.replicas > global_batch:
        raise ConfigError(f"{plan.replicas} replicas but a global batch of {global_batch}: each replica needs examples")
    if global_batch % plan.replicas:
        raise ConfigError(f"global batch {global_batch} does not split evenly over {plan.replicas} replicas")
    return global_batch // plan.replicas


def make_strategy(*, replicas: int, env: Mapping[str, str]) -> tuple[Any, StrategyPlan]:
    """Build the strategy; call before any other TensorFlow work in the process."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    plan = plan_strategy(replicas=replicas, gpus=len(gpus), tf_config=env.get("TF_CONFIG"))
    if plan.kind == StrategyKind.MULTI_WORKER:
        return _keras_multi_worker_strategy(), plan
    if plan.kind == StrategyKind.GPUS:
        return tf.distribute.MirroredStrategy(), plan
    [cpu] = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError:
        pass  # already initialised by an earlier call in this process: keep its devices
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:replicas]
    if len(devices) < replicas:
        raise ConfigError(f"asked for {replicas} CPU replicas but the runtime has {len(devices)} logical CPUs")
    return tf.distribute.MirroredStrategy(devices=devices), plan


def _keras_multi_worker_strategy() -> Any:
    """MultiWorkerMirroredStrategy whose `reduce` accepts what Keras 3's `fit` hands it."""
    import tensorflow as tf

    class KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """Reduce leaf by leaf; a scalar (loss, metric) is averaged over the replicas only."""

        # Keras 3 passes a whole (images, labels) batch, which only MirroredStrategy maps over,
        # and asks for scalars along axis 0, which they lack: both fail in fit's first step.
        def reduce(self, reduce_op: Any, value: Any, axis: int | None = None) -> Any:
            parent = super().reduce

            def one(leaf: Any) -> Any:
                scalar = all(part.shape.rank == 0 for part in self.experimental_local_results(leaf))
                return parent(reduce_op, leaf, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return KerasMultiWorkerStrategy()
