"""Training across hosts as one Spark barrier stage: what each worker asks for, and its TF_CONFIG.

All tasks of a barrier stage start together or not at all, and each sees every other task's
address, which is exactly what a MultiWorkerMirroredStrategy cluster needs. One task per
executor (`spark.task.cpus` = the executor's cores), one executor per training worker, each task
running the same `python -m jobs.train` a single host runs. Pure: no Spark or TensorFlow import.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tfship.errors import ConfigError

# Settings read from the environment, with defaults sized for a laptop or the loopback harness.
RESOURCE_ENV = {
    "cores": "TFSHIP_TRAIN_WORKER_CORES",
    "memory": "TFSHIP_TRAIN_WORKER_MEMORY",
    "memory_overhead": "TFSHIP_TRAIN_WORKER_MEMORY_OVERHEAD",
    "gpus": "TFSHIP_TRAIN_WORKER_GPUS",
    "gpu_discovery_script": "TFSHIP_TRAIN_GPU_DISCOVERY_SCRIPT",
    "stage_attempts": "TFSHIP_TRAIN_STAGE_ATTEMPTS",
    "slots_wait_s": "TFSHIP_TRAIN_SLOTS_WAIT_S",
}
_MEMORY = re.compile(r"^[1-9][0-9]*[kmgt]$")


@dataclass(frozen=True)
class WorkerResources:
    """What one training worker (one YARN container) asks for.

    `memory` is the executor JVM's heap, which only runs the barrier task; the training process
    lives in `memory_overhead` (YARN counts every process of the container against heap +
    overhead, and kills a container that goes above it).
    """

    cores: int = 1
    memory: str = "512m"
    memory_overhead: str = "1536m"
    gpus: int = 0
    gpu_discovery_script: str = ""
    stage_attempts: int = 2  # the first run and one resume from the checkpoint
    slots_wait_s: int = 20  # how long every executor has to register before the first barrier check

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise ConfigError(f"a training worker needs at least one core, got {self.cores}")
        for name in ("memory", "memory_overhead"):
            if not _MEMORY.match(getattr(self, name)):
                raise ConfigError(f"{RESOURCE_ENV[name]}={getattr(self, name)!r} is not a JVM size like 512m or 2g")
        if self.gpus < 0:
            raise ConfigError(f"{RESOURCE_ENV['gpus']} must be 0 or more, got {self.gpus}")
        if self.gpus and not self.gpu_discovery_script:
            raise ConfigError(
                f"{RESOURCE_ENV['gpus']}={self.gpus} needs {RESOURCE_ENV['gpu_discovery_script']}: the script "
                "that tells Spark which GPUs an executor has (Spark's examples/src/main/scripts/getGpusResources.sh)"
            )
        if self.stage_attempts < 1 or self.slots_wait_s < 1:
            raise ConfigError("stage attempts and the slots wait must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerResources:
        """Defaults overridden by the TFSHIP_TRAIN_* variables that are set."""
        kwargs: dict = {}
        for name, variable in RESOURCE_ENV.items():
            if env.get(variable, "") != "":
                raw = env[variable]
                try:
                    kwargs[name] = int(raw) if isinstance(getattr(cls, name), int) else raw
                except ValueError:
                    raise ConfigError(f"{variable}={raw!r} is not a whole number") from None
        return cls(**kwargs)

    def spark_conf(self, workers: int) -> dict[str, str]:
        """spark-submit settings that give `workers` executors, one training task each."""
        if workers < 2:
            raise ConfigError(f"a training cluster needs at least 2 workers, got {workers}")
        conf = {
            "spark.executor.instances": str(workers),
            "spark.executor.cores": str(self.cores),
            # One task per executor: the task takes every core, so two never share a host's executor.
            "spark.task.cpus": str(self.cores),
            "spark.executor.memory": self.memory,
            "spark.executor.memoryOverhead": self.memory_overhead,
            # Barrier stages refuse dynamic allocation; a fixed set of executors is the cluster.
            "spark.dynamicAllocation.enabled": "false",
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": f"{self.slots_wait_s}s",
            # Too few slots: fail after 12 checks 3 s apart, under a minute from the job's start
            # with the wait above (Spark's defaults, 40 x 15 s, make it 10 minutes). Executors
            # that are only slow to start still join during the checks.
            "spark.scheduler.barrier.maxConcurrentTasksCheck.interval": "3s",
            "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures": "12",
            # A failed worker fails the whole stage; the next attempt resumes from the checkpoint.
            "spark.stage.maxConsecutiveAttempts": str(self.stage_attempts),
            # Kill a cancelled task's Python worker (and so its training process) promptly.
            "spark.python.task.killTimeout": "2s",
        }
        if self.gpus:
            # Spark's custom resource scheduling; on YARN, Spark turns a `gpu` amount into YARN's
            # built-in yarn.io/gpu resource (running-on-yarn.html, "Resource Allocation").
            conf |= {
                "spark.executor.resource.gpu.amount": str(self.gpus),
                "spark.task.resource.gpu.amount": str(self.gpus),
                "spark.executor.resource.gpu.discoveryScript": self.gpu_discovery_script,
            }
        return conf


def tf_config(addresses: Sequence[str], index: int) -> str:
    """TF_CONFIG for worker `index` of a cluster whose workers are `addresses` (host:port, in task order)."""
    if not 0 <= index < len(addresses):
        raise ConfigError(f"worker {index} is outside a cluster of {len(addresses)}")
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"two training workers share an address: {list(addresses)}")
    return json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}})
