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
