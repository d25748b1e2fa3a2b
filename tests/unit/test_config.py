from __future__ import annotations

import pytest

from tfship.config import DEFAULT_STORAGE_ROOT, Settings
from tfship.errors import ConfigError


def test_defaults_point_at_local_files():
    settings = Settings.from_env({})
    assert settings.storage_root == DEFAULT_STORAGE_ROOT
    assert settings.storage_root.startswith("file:///")
    assert settings.webhdfs_endpoints == ()


def test_endpoints_are_split_on_semicolons():
    settings = Settings.from_env(
        {
            "TFSHIP_STORAGE_ROOT": "hdfs://nn:8020/data",
            "TFSHIP_WEBHDFS_ENDPOINTS": "http://a:9870/; http://b:14000",
        }
    )
    assert settings.webhdfs_endpoints == ("http://a:9870", "http://b:14000")


def test_hdfs_root_without_endpoints_is_refused():
    with pytest.raises(ConfigError, match="TFSHIP_WEBHDFS_ENDPOINTS"):
        Settings.from_env({"TFSHIP_STORAGE_ROOT": "hdfs://nn:8020/data"})


def test_bad_endpoint_is_named():
    with pytest.raises(ConfigError, match="'ftp://x'"):
        Settings.from_env({"TFSHIP_STORAGE_ROOT": "hdfs://nn/d", "TFSHIP_WEBHDFS_ENDPOINTS": "ftp://x"})


def test_bad_number_is_named():
    with pytest.raises(ConfigError, match="TFSHIP_RAW_WAIT_TIMEOUT_S='soon'"):
        Settings.from_env({"TFSHIP_RAW_WAIT_TIMEOUT_S": "soon"})


def test_settings_are_frozen():
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.model = "other"  # type: ignore[misc]


def test_schedule_start_and_catchup_come_from_the_environment():
    import datetime as dt

    settings = Settings.from_env({"TFSHIP_SCHEDULE_START": "2026-11-20", "TFSHIP_CATCHUP": "true"})
    assert (settings.schedule_start, settings.catchup) == (dt.date(2026, 11, 20), True)
    assert (Settings.from_env({}).schedule_start, Settings.from_env({}).catchup) == (dt.date(2026, 1, 1), False)
    with pytest.raises(ConfigError, match="TFSHIP_SCHEDULE_START='20/11/2026' is not YYYY-MM-DD"):
        Settings.from_env({"TFSHIP_SCHEDULE_START": "20/11/2026"})
    with pytest.raises(ConfigError, match="TFSHIP_CATCHUP='yes please' must be true or false"):
        Settings.from_env({"TFSHIP_CATCHUP": "yes please"})


def test_serving_hosts_come_from_tfship_serving_dir_in_order():
    settings = Settings.from_env({"TFSHIP_SERVING_DIR": "serve-b=/srv/b/mnist; serve-a=/srv/a/mnist"})
    assert [(h.name, h.serving_dir) for h in settings.serving_hosts] == [
        ("serve-b", "/srv/b/mnist"),
        ("serve-a", "/srv/a/mnist"),
    ]
    assert settings.serving_host("serve-a").serving_dir == "/srv/a/mnist"
    with pytest.raises(ConfigError, match=r"'nope' is not a serving host \(known: \['serve-a', 'serve-b'\]\)"):
        settings.serving_host("nope")
    with pytest.raises(ConfigError, match="name a host twice"):
        Settings.from_env({"TFSHIP_SERVING_DIR": "a=/x;a=/y"})
    [local] = Settings.from_env({}).serving_hosts
    assert local.name == "local" and local.serving_dir.endswith("/var/serving/mnist")


def test_the_old_serving_variable_still_works_for_one_release_with_a_warning():
    with pytest.warns(FutureWarning, match="TFSHIP_SERVING_TARGETS is deprecated: set TFSHIP_SERVING_DIR"):
        settings = Settings.from_env({"TFSHIP_SERVING_TARGETS": "local=/srv/old"})
    assert [h.serving_dir for h in settings.serving_hosts] == ["/srv/old"]
    with pytest.warns(FutureWarning, match="ignored because TFSHIP_SERVING_DIR is set"):
        settings = Settings.from_env(
            {"TFSHIP_SERVING_TARGETS": "local=/srv/old", "TFSHIP_SERVING_DIR": "local=/srv/new"}
        )
    assert [h.serving_dir for h in settings.serving_hosts] == ["/srv/new"]


def test_rest_port_and_param_defaults_are_read_here():
    settings = Settings.from_env({"TFSHIP_SERVING_REST_PORT": "9501", "TFSHIP_PARAM_DEFAULTS": '{"epochs": 2}'})
    assert (settings.serving_rest_port, dict(settings.param_defaults)) == (9501, {"epochs": 2})
    with pytest.raises(ConfigError, match="TFSHIP_SERVING_REST_PORT='0' is not a TCP port"):
        Settings.from_env({"TFSHIP_SERVING_REST_PORT": "0"})
