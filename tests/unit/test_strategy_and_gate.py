from __future__ import annotations

import json

import pytest

from tfship.errors import ConfigError
from tfship.release.gate import decide
from tfship.release.serving_dir import ServingDir
from tfship.training.cv import choose_best, grid_from_param
from tfship.training.model import HParams
from tfship.training.strategy import StrategyPlan, per_replica_batch, plan_strategy

TWO_WORKERS = json.dumps({"cluster": {"worker": ["h1:2222", "h2:2222"]}, "task": {"type": "worker", "index": 1}})


def test_no_gpu_means_cpu_replicas():
    assert plan_strategy(replicas=2, gpus=0, tf_config=None) == StrategyPlan("cpu_replicas", 2)


def test_gpus_are_all_used():
    assert plan_strategy(replicas=2, gpus=4, tf_config=None) == StrategyPlan("gpus", 4)


def test_several_workers_mean_multi_worker():
    plan = plan_strategy(replicas=2, gpus=0, tf_config=TWO_WORKERS)
    assert (plan.kind, plan.workers, plan.task_index, plan.replicas) == ("multi_worker", 2, 1, 2)


def test_single_worker_tf_config_is_plain_local_training():
    one = json.dumps({"cluster": {"worker": ["h1:2222"]}, "task": {"type": "worker", "index": 0}})
    assert plan_strategy(replicas=3, gpus=0, tf_config=one).kind == "cpu_replicas"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "TF_CONFIG is malformed"),
        (json.dumps({"cluster": {}}), "TF_CONFIG is malformed"),
        (json.dumps({"cluster": {"worker": "h1:1"}, "task": {"type": "worker", "index": 0}}), "non-empty list"),
        (json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "ps", "index": 0}}), "'ps'"),
        (json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 5}}), "index 5"),
        (
            json.dumps({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}),
            "'chief' role is not supported",
        ),
        (
            json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}),
            "'chief' role is not supported",
        ),
    ],
)
def test_malformed_tf_config_is_refused_clearly(raw, message):
    with pytest.raises(ConfigError, match=message):
        plan_strategy(replicas=1, gpus=0, tf_config=raw)


def test_global_batch_splits_over_replicas():
    assert per_replica_batch(StrategyPlan("cpu_replicas", 2), 128) == 64
    with pytest.raises(ConfigError, match="4 replicas but a global batch of 2"):
        per_replica_batch(StrategyPlan("cpu_replicas", 4), 2)
    with pytest.raises(ConfigError, match="does not split evenly"):
        per_replica_batch(StrategyPlan("cpu_replicas", 3), 128)


def test_gate_first_run_uses_the_floor_only():
    assert decide(0.96, None, tolerance=0.01, floor=0.9).publish
    no = decide(0.85, None, tolerance=0.01, floor=0.9)
    assert not no.publish and "0.8500 < floor 0.9000" in no.reason


def test_gate_better_and_slightly_worse_pass_clearly_worse_fails():
    assert decide(0.97, 0.96, served_version=2026112500, tolerance=0.005, floor=0.9).publish
    assert decide(0.957, 0.96, served_version=2026112500, tolerance=0.005, floor=0.9).publish
    worse = decide(0.95, 0.96, served_version=2026112500, tolerance=0.005, floor=0.9)
    assert not worse.publish
    assert "< served v2026112500 0.9600" in worse.reason


def test_gate_force_overrides_and_says_so():
    forced = decide(0.5, 0.96, served_version=1, tolerance=0.0, floor=0.9, force=True)
    assert forced.publish and forced.forced and forced.reason.startswith("FORCED")
    assert not decide(0.99, 0.96, served_version=1, tolerance=0.0, floor=0.9, force=True).forced


def served_version_dir(path):
    """The served version and its directory, through the serving dir's owner."""
    newest = ServingDir(path).newest()
    return None if newest is None else (newest, ServingDir(path).version_dir(newest))


def test_served_version_is_the_highest_numeric_directory(tmp_path):
    assert served_version_dir(tmp_path / "missing") is None
    for name in ("2026112400", "2026112501", ".staging-abc", "2026112500", "notes"):
        (tmp_path / name).mkdir()
    assert served_version_dir(tmp_path) == (2026112501, tmp_path / "2026112501")


def test_cv_choice_prefers_mean_then_spread():
    results = [
        {"config_id": "a", "mean_accuracy": 0.90, "std_accuracy": 0.01},
        {"config_id": "b", "mean_accuracy": 0.95, "std_accuracy": 0.03},
        {"config_id": "c", "mean_accuracy": 0.95, "std_accuracy": 0.01},
    ]
    assert choose_best(results)["config_id"] == "c"


def test_cv_grid_param_is_checked():
    assert [h.config_id for h in grid_from_param([{"learning_rate": 0.01, "filters": 4, "dropout": 0.1}])] == [
        "lr0.01-f4-d0.1"
    ]
    assert len(grid_from_param(None)) == 4
    with pytest.raises(ConfigError, match="unknown hyperparameters"):
        grid_from_param([{"learning_rate": 0.01, "layers": 3}])
    with pytest.raises(ConfigError, match="learning_rate"):
        HParams(learning_rate=2.0)


def test_a_backfill_day_older_than_the_served_version_is_held():
    import datetime as dt

    from tfship.release.gate import newer_day_served

    reason = newer_day_served(dt.date(2026, 11, 20), 2026112501)
    assert reason is not None
    assert "day 2026-11-20 is older than the served version 2026112501" in reason
    assert "serving untouched" in reason
    assert newer_day_served(dt.date(2026, 11, 25), 2026112501) is None  # a retrain of the served day
    assert newer_day_served(dt.date(2026, 11, 26), 2026112501) is None
    assert newer_day_served(dt.date(2026, 11, 20), None) is None
