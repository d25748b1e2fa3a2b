"""Pure parts: flag validation, the spec and its hash, version choice for rollback, the rollback DAG."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfship.errors import ConfigError


def test_unknown_or_spec_owned_flags_are_refused() -> None:
    from tfship.serving.server_config import validate_flags

    assert validate_flags(["--max_num_load_retries=0"]) == ("--max_num_load_retries=0",)
    with pytest.raises(ConfigError, match="fle_system_poll_wait_seconds"):
        validate_flags(["--fle_system_poll_wait_seconds=5"])
    with pytest.raises(ConfigError, match="rest_api_port"):
        validate_flags(["--rest_api_port=9000"])


def test_spec_hash_changes_with_flags_and_config_content(tmp_path: Path) -> None:
    from tfship.serving.container import ServingSpec

    config = tmp_path / "models.config"
    config.write_text("model_config_list {}")
    base = ServingSpec(model="mnist", serving_dir="/srv/mnist", image="img:1", model_config_file=str(config))
    assert base.container_name == "tfserving-mnist"
    assert base.binds()["/srv/mnist"] == {"bind": "/models/mnist", "mode": "ro"}
    assert "--model_config_file=/etc/tfship/models.config" in base.command()
    same = ServingSpec(model="mnist", serving_dir="/srv/mnist", image="img:1", model_config_file=str(config))
    assert same.spec_hash() == base.spec_hash()
    assert (
        ServingSpec(model="mnist", serving_dir="/srv/mnist", image="img:2", model_config_file=str(config)).spec_hash()
        != base.spec_hash()
    )
    config.write_text("model_config_list { }  # changed")
    changed = ServingSpec(model="mnist", serving_dir="/srv/mnist", image="img:1", model_config_file=str(config))
    assert changed.spec_hash() != base.spec_hash()
    with pytest.raises(ConfigError, match="restart_policy"):
        ServingSpec(model="mnist", serving_dir="/srv/mnist", restart_policy="sometimes")


def test_versions_to_reject(tmp_path: Path) -> None:
    from tfship.release.serving_dir import ServingDir
    from tfship.serving.canary import CanaryError
    from tfship.serving.rollback import versions_to_reject

    for version in (2024010100, 2024010200, 2024010300):
        (tmp_path / str(version)).mkdir()
    (tmp_path / ".staging-x").mkdir()
    assert versions_to_reject(ServingDir(tmp_path), "previous") == [2024010300]
    assert versions_to_reject(ServingDir(tmp_path), "2024010100") == [2024010300, 2024010200]
    with pytest.raises(CanaryError, match="2024010500"):
        versions_to_reject(ServingDir(tmp_path), "2024010500")


def test_rollback_dag_parses_with_validated_params() -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "serving_rollback.py"))
    assert bag.import_errors == {}
    dag = bag.dags["serving_rollback"]
    assert [task.task_id for task in dag.tasks] == ["rollback_serving"]
    dag.params.validate()
    with pytest.raises(ParamValidationError, match="target"):
        dag.params["target"] = "yesterday"
