"""A connection cut in the middle of a file, on the real WebHDFS: the publication resumes at the byte it reached."""

from __future__ import annotations

import datetime as dt
import logging
import random

import pytest

from harness.cutting_proxy import CuttingProxy
from harness.fake_candidate import data_file, write_fake_candidate
from tests.publish.helpers import numeric_children, source_tree, tree
from tfship.config import StorageConfig
from tfship.release.publish import PublishPolicy, publish_candidate
from tfship.release.transfer import Source

pytestmark = pytest.mark.hdfs
DAY = dt.date(2026, 4, 3)
CUT_AFTER = 1_000_000


def test_a_cut_connection_resumes_at_the_byte_reached_and_the_result_is_identical(
    hdfs_storage, hdfs_cluster, serving_dir, caplog
):
    candidate, manifest = write_fake_candidate(hdfs_storage, model="mnist", day=DAY, total_bytes=3_000_000, seed=41)
    size = next(entry.size for entry in manifest.files if entry.path == data_file())
    with CuttingProxy(hdfs_cluster.webhdfs_url, cut_suffix=data_file(), cut_after=CUT_AFTER) as proxy:
        source = Source(StorageConfig(hdfs_storage.root_uri, (proxy.url,), "root"))
        with caplog.at_level(logging.INFO):
            result = publish_candidate(
                source, candidate, serving_dir, host="serve-a", run_id="cut", rng=random.Random(0),
                policy=PublishPolicy(backoff_s=0.05, space_margin_bytes=0),
            )  # fmt: skip
    assert proxy.cut == [(proxy.cut[0][0], CUT_AFTER)], proxy.cut
    reads = [offset for path, offset in proxy.opens if path.endswith(data_file())]
    assert reads == [0, CUT_AFTER], proxy.opens  # the second read starts where the first was cut
    assert f"{data_file()}: resuming at byte {CUT_AFTER} of {size}" in caplog.text
    assert numeric_children(serving_dir) == ["2026040300"]
    assert tree(serving_dir / "2026040300") == source_tree(hdfs_storage, candidate)
    assert result.transferred and result.bytes == manifest.total_bytes


def test_a_file_changed_at_the_source_meanwhile_is_read_again_from_zero(
    hdfs_storage, hdfs_cluster, serving_dir, caplog
):
    candidate, _ = write_fake_candidate(hdfs_storage, model="mnist", day=DAY, total_bytes=2_000_000, seed=42)
    victim = f"{candidate}/{data_file()}"
    with hdfs_storage.open_read(victim) as handle:
        original = handle.read()

    class ChangingProxy(CuttingProxy):
        """After the cut, the file grows at the source (someone appends to it) before the reader comes back."""

        def _take_cut(self, path: str) -> bool:
            cut = super()._take_cut(path)
            if cut:
                with hdfs_storage.open_write(victim) as handle:
                    handle.write(original + b"appended later")
            return cut

    with ChangingProxy(hdfs_cluster.webhdfs_url, cut_suffix=data_file(), cut_after=CUT_AFTER) as proxy:
        source = Source(StorageConfig(hdfs_storage.root_uri, (proxy.url,), "root"))
        with caplog.at_level(logging.INFO), pytest.raises(Exception) as caught:
            publish_candidate(
                source, candidate, serving_dir, host="serve-a", run_id="changed", rng=random.Random(0),
                policy=PublishPolicy(backoff_s=0.05, space_margin_bytes=0),
            )  # fmt: skip
    assert "changed at the source while it was read" in caplog.text and "reading it again from byte 0" in caplog.text
    reads = [offset for path, offset in proxy.opens if path.endswith(data_file())]
    assert reads[:2] == [0, 0], proxy.opens  # not resumed: read again from the start
    assert caught.value.check == "size"  # and then the manifest refuses the changed file
    assert numeric_children(serving_dir) == []
