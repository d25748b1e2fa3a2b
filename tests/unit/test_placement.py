"""Where the TF Serving containers of a worker in a container go: its network, a volume, or copied in."""

from __future__ import annotations

import docker
import pytest

from tfship.config import Settings
from tfship.errors import ConfigError
from tfship.serving.container import NETWORK_LABEL, ServingSpec

API = docker.APIClient(version="1.41")  # builds request bodies only; no engine is asked


def kwargs(**fields):
    spec = ServingSpec(model="mnist", serving_dir="/srv/tfserving/mnist", host="serving-1", **fields)
    return spec, spec.create_kwargs(API)


def test_a_host_in_a_container_mounts_its_volume_and_shares_the_workers_network():
    spec, created = kwargs(serving_volume="tfship_serving-1-models", network_mode="container:tfship-serving-1")
    host_config = created["host_config"]
    assert host_config["Binds"] == ["tfship_serving-1-models:/models/mnist:ro"]
    assert host_config["NetworkMode"] == "container:tfship-serving-1"
    assert "PortBindings" not in host_config and created["ports"] == []
    assert created["labels"][NETWORK_LABEL] == "container:tfship-serving-1"
    # Another volume is another container spec: the running one would be recreated.
    assert spec.spec_hash() != kwargs(serving_volume="other", network_mode="container:tfship-serving-1")[0].spec_hash()


def test_the_default_binds_the_path_on_the_host_network():
    _, created = kwargs()
    assert created["host_config"]["Binds"] == ["/srv/tfserving/mnist:/models/mnist:ro"]
    assert created["host_config"]["NetworkMode"] == "host"
    assert NETWORK_LABEL not in created["labels"]


def test_a_copied_in_serving_dir_binds_nothing():
    _, created = kwargs(copy_in=True, network_mode="container:tfship-worker")
    assert not created["host_config"].get("Binds")


def test_worker_placement_from_the_environment():
    settings = Settings.from_env(
        {"TFSHIP_WORKER_CONTAINER": "tfship-serving-2", "TFSHIP_SERVING_VOLUME": "tfship_serving-2-models"}
    )
    assert settings.serving_network_mode == "container:tfship-serving-2"
    assert settings.serving_volume == "tfship_serving-2-models"
    assert Settings.from_env({}).serving_network_mode == "host"
    with pytest.raises(ConfigError, match="TFSHIP_SERVING_VOLUME needs TFSHIP_WORKER_CONTAINER"):
        Settings.from_env({"TFSHIP_SERVING_VOLUME": "v"})
