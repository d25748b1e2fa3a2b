from __future__ import annotations

import datetime as dt
import json

import pendulum
import pytest

from tfship import paths
from tfship.days import day_number, parse_day, resolve_day
from tfship.errors import ConfigError, PathEscapeError

D = dt.date(2026, 11, 25)


def test_partition_paths_are_hive_style_and_built_from_the_day():
    assert paths.raw_dir("mnist", D) == "raw/mnist/dt=2026-11-25"
    assert paths.raw_success("mnist", D) == "raw/mnist/dt=2026-11-25/_SUCCESS"
    assert paths.features_dir("mnist", D) == "features/mnist/dt=2026-11-25"
    assert paths.quarantine_dir("mnist", D) == "quarantine/mnist/dt=2026-11-25"


def test_candidate_dir_names_day_and_digest_prefix():
    digest = "0123456789abcdef0123456789abcdef"
    assert paths.candidate_dir("mnist", D, digest) == "models/mnist/candidates/2026-11-25-01234567"
    with pytest.raises(ConfigError, match="XYZ"):
        paths.candidate_dir("mnist", D, "XYZ")


def test_work_dir_makes_run_ids_path_safe():
    assert paths.work_dir("tfship_daily", "manual__2026-11-26T22:35:52+00:00") == (
        "work/tfship_daily/manual__2026-11-26T22_35_52_00_00"
    )


@pytest.mark.parametrize("bad", ["../etc", "a/../../b", "/abs/path"])
def test_paths_that_leave_the_root_are_refused_by_name(bad):
    with pytest.raises(PathEscapeError, match=bad.replace(".", r"\.")):
        paths.normalize_relative(bad)


def test_normalize_keeps_inner_dotdot_that_stays_inside():
    assert paths.normalize_relative("a/b/../c//./d") == "a/c/d"


@pytest.mark.parametrize("bad", ["MNIST", "a b", "", "../x"])
def test_bad_dataset_names_are_refused(bad):
    with pytest.raises(ConfigError, match="dataset name"):
        paths.raw_dir(bad, D)


def test_resolve_day_prefers_the_param():
    start = pendulum.datetime(2026, 11, 20, tz="UTC")
    assert resolve_day("2026-11-25", start) == D
    assert resolve_day(None, start) == dt.date(2026, 11, 20)


def test_resolve_day_uses_utc_date_of_the_interval_start():
    start = pendulum.datetime(2026, 11, 25, 23, 30, tz="America/New_York")  # 04:30 UTC next day
    assert resolve_day(None, start) == dt.date(2026, 11, 26)


def test_a_run_without_day_or_interval_fails_clearly():
    with pytest.raises(ConfigError, match="neither a 'day' Param nor a data interval"):
        resolve_day(None, None)


def test_bad_day_names_the_value():
    with pytest.raises(ConfigError, match="'2026-13-01'"):
        parse_day("2026-13-01")


def test_day_number():
    assert day_number(D) == 20261125


@pytest.mark.parametrize(
    ("raw_root", "message"),
    [
        ("../outside", "escapes the storage root"),
        ("a/../../b", "escapes the storage root"),
        ("/etc", "must be relative"),
        (".", "the storage root itself"),
        ("features/replay", "inside features/"),
        ("", "non-empty"),
    ],
)
def test_raw_root_refuses_escapes_and_pipeline_outputs(raw_root, message):
    with pytest.raises(ConfigError, match=message):
        paths.raw_dir("mnist", D, raw_root)


def test_raw_root_names_a_replay_directory():
    assert paths.raw_dir("mnist", D, "replays/fixed/") == "replays/fixed/mnist/dt=2026-11-25"
    assert paths.raw_success("mnist", D, "raw") == "raw/mnist/dt=2026-11-25/_SUCCESS"


def test_day_of_version_reads_d_back_from_the_number():
    from tfship.release.serving_dir import ModelVersion

    def day_of_version(value):
        version = ModelVersion.parse(value)
        return None if version is None else version.day

    assert day_of_version(2026112503) == dt.date(2026, 11, 25)
    assert day_of_version("2026010100") == dt.date(2026, 1, 1)
    assert day_of_version("{{ ti.xcom_pull() }}") is None
    assert day_of_version(2026133100) is None


def test_model_version_is_made_from_d_and_n_and_gives_them_back():
    from tfship.release.serving_dir import ModelVersion

    version = ModelVersion.of(dt.date(2026, 11, 25), 3)
    assert version == 2026112503 and isinstance(version, int)
    assert (version.day, version.n) == (dt.date(2026, 11, 25), 3)
    assert ModelVersion.parse("00123") == 123 and ModelVersion.parse("v2") is None and ModelVersion.parse(True) is None
    assert json.dumps({"version": version}) == '{"version": 2026112503}'
    with pytest.raises(ConfigError, match="retrain 100"):
        ModelVersion.of(dt.date(2026, 11, 25), 100)
