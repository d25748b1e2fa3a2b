"""The same storage contract on file:// and on a real HDFS over WebHDFS."""

from __future__ import annotations

import pytest

from tfship.errors import ConfigError, PathEscapeError, StorageError
from tfship.storage import open_storage


@pytest.fixture(params=["file", pytest.param("hdfs", marks=pytest.mark.hdfs)])
def storage(request):
    return request.getfixturevalue("local_storage" if request.param == "file" else "hdfs_storage")


def test_write_read_list_size(storage):
    with storage.open_write("a/b/data.bin") as handle:
        handle.write(b"x" * 1000)
        handle.write(b"tail")
    assert storage.exists("a/b/data.bin")
    assert storage.list("a/b") == ["data.bin"]
    assert storage.size("a/b/data.bin") == 1004
    with storage.open_read("a/b/data.bin") as handle:
        assert handle.read() == b"x" * 1000 + b"tail"
    assert storage.is_dir("a") and not storage.is_dir("a/b/data.bin")


def test_a_failed_write_leaves_nothing_behind(storage):
    with storage.open_write("f.txt") as handle:
        handle.write(b"old")
    with pytest.raises(RuntimeError), storage.open_write("f.txt") as handle:
        handle.write(b"half of the new")
        raise RuntimeError("writer died")
    with storage.open_read("f.txt") as handle:
        assert handle.read() == b"old"
    assert storage.list("") == ["f.txt"]


def test_rename_moves_and_refuses_an_existing_target(storage):
    storage.makedirs("src/inner")
    with storage.open_write("src/inner/x") as handle:
        handle.write(b"1")
    storage.makedirs("taken")
    with pytest.raises(StorageError, match="the target exists"):
        storage.rename("src", "taken")
    storage.rename("src", "dst/moved")
    assert not storage.exists("src")
    assert storage.list("dst/moved/inner") == ["x"]


def test_delete_and_missing_paths(storage):
    storage.makedirs("d/e")
    assert storage.delete("d", recursive=True) is True
    assert storage.delete("d", recursive=True) is False
    with pytest.raises(StorageError, match="does not exist"), storage.open_read("nope.txt"):
        pass
    with pytest.raises(StorageError, match="not an existing directory"):
        storage.list("nope")


def test_paths_escaping_the_root_are_refused(storage):
    with pytest.raises(PathEscapeError, match=r"\.\./outside"):
        storage.exists("../outside")


def test_uri_names_the_backend(storage):
    assert storage.uri("raw/x/dt=2026-01-01").endswith("/raw/x/dt=2026-01-01")
    assert storage.uri("raw").startswith(storage.root_uri)


def test_unknown_scheme_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"'s3://bucket/x'.*unknown scheme 's3'"):
        open_storage("s3://bucket/x")


def test_relative_file_root_is_refused():
    with pytest.raises(ConfigError, match="file:///absolute/path"):
        open_storage("file://relative/dir")


@pytest.mark.hdfs
def test_webhdfs_fails_over_from_a_dead_endpoint(hdfs_cluster):
    storage = open_storage(
        f"{hdfs_cluster.rpc_uri}/failover", ["http://127.0.0.1:9", hdfs_cluster.webhdfs_url], user="root"
    )
    with storage.open_write("x") as handle:
        handle.write(b"ok")
    assert storage.size("x") == 2


@pytest.mark.hdfs
def test_unreachable_webhdfs_is_named(hdfs_cluster):
    storage = open_storage(f"{hdfs_cluster.rpc_uri}/x", ["http://127.0.0.1:9"], user="root")
    with pytest.raises(StorageError, match=r"no WebHDFS endpoint of http://127\.0\.0\.1:9 answered"):
        storage.exists("anything")
