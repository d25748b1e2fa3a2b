"""What a training cluster asks Spark for, and the TF_CONFIG each of its workers gets."""

from __future__ import annotations

import json

import pytest

from tfship.errors import ConfigError
from tfship.training.cluster import WorkerResources, tf_config
from tfship.training.strategy import plan_strategy


def test_defaults_ask_for_one_task_per_executor_and_no_gpu():
    conf = WorkerResources().spark_conf(3)
    assert conf["spark.executor.instances"] == "3"
    assert conf["spark.executor.cores"] == conf["spark.task.cpus"] == "1"
    assert (conf["spark.executor.memory"], conf["spark.executor.memoryOverhead"]) == ("512m", "1536m")
    assert conf["spark.dynamicAllocation.enabled"] == "false"
    assert conf["spark.stage.maxConsecutiveAttempts"] == "2"
    assert not [key for key in conf if ".resource.gpu." in key]


def test_gpus_go_through_sparks_resource_scheduling():
    resources = WorkerResources(cores=8, memory="4g", gpus=4, gpu_discovery_script="/opt/spark/getGpus.sh")
    conf = resources.spark_conf(2)
    # Names as in Spark's configuration docs (custom resource scheduling).
    assert conf["spark.executor.resource.gpu.amount"] == "4"
    assert conf["spark.task.resource.gpu.amount"] == "4"
    assert conf["spark.executor.resource.gpu.discoveryScript"] == "/opt/spark/getGpus.sh"
    assert conf["spark.task.cpus"] == "8"


def test_settings_come_from_the_environment_and_bad_ones_are_named():
    env = {"TFSHIP_TRAIN_WORKER_CORES": "4", "TFSHIP_TRAIN_WORKER_MEMORY_OVERHEAD": "6g"}
    env["TFSHIP_TRAIN_WORKER_GPUS"] = ""  # set but empty: the default
    resources = WorkerResources.from_env(env)
    assert (resources.cores, resources.memory_overhead, resources.gpus) == (4, "6g", 0)
    with pytest.raises(ConfigError, match="TFSHIP_TRAIN_WORKER_CORES='two' is not a whole number"):
        WorkerResources.from_env({"TFSHIP_TRAIN_WORKER_CORES": "two"})
    with pytest.raises(ConfigError, match=r"TFSHIP_TRAIN_WORKER_MEMORY='2GB' is not a JVM size"):
        WorkerResources.from_env({"TFSHIP_TRAIN_WORKER_MEMORY": "2GB"})
    with pytest.raises(ConfigError, match="needs TFSHIP_TRAIN_GPU_DISCOVERY_SCRIPT"):
        WorkerResources.from_env({"TFSHIP_TRAIN_WORKER_GPUS": "1"})
    with pytest.raises(ConfigError, match="at least 2 workers"):
        WorkerResources().spark_conf(1)


def test_tf_config_names_every_worker_in_task_order_and_plans_a_multi_worker_strategy():
    addresses = ["10.0.0.5:41000", "10.0.0.7:41002", "10.0.0.9:40999"]
    raw = tf_config(addresses, 1)
    assert json.loads(raw) == {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": 1}}
    plan = plan_strategy(replicas=2, gpus=0, tf_config=raw)
    assert (plan.kind, plan.workers, plan.task_index, plan.replicas) == ("multi_worker", 3, 1, 3)
    with pytest.raises(ConfigError, match="share an address"):
        tf_config(["h:1", "h:1"], 0)
    with pytest.raises(ConfigError, match="outside a cluster of 2"):
        tf_config(["h:1", "h:2"], 2)
