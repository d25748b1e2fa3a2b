"""Host-side failures of a publication, on real filesystems, through the operator.

Each case is made for real: a small tmpfs, one filled by another writer mid-transfer, a read-only
bind mount, a directory the worker's user may not write (the operator run as `nobody`), a file
where the serving dir belongs, and a version directory changed by hand. Each must fail with its
own check, alert with the host, the path and the numbers, and leave the serving dir as it was
(the release log may gain the failure's line).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.fake_candidate import write_fake_candidate
from tests.publish.helpers import numeric_children, release_lines, tree
from tfship.config import StorageConfig
from tfship.storage import LocalStorage

DAY = dt.date(2026, 4, 2)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _context(task_id: str = "publish_model") -> dict:
    ti = SimpleNamespace(
        dag_id="tfship_daily", task_id=task_id, map_index=0, try_number=1, max_tries=3,
        log_url=f"http://localhost:8080/dags/tfship_daily/runs/r/tasks/{task_id}", xcom_push=lambda **_: None,
    )  # fmt: skip
    return {"ti": ti, "run_id": "manual__host-faults"}


def _operator(storage: LocalStorage, candidate: str, serving_dir: Path, **extra):
    from tfship_airflow.publish import PublishModelOperator

    extra.setdefault("space_margin_bytes", 0)
    return PublishModelOperator(
        task_id="publish_model", candidate=candidate, host="serve-a", serving_dir=str(serving_dir),
        storage=StorageConfig(storage.root_uri), backoff_s=0.05, **extra,
    )  # fmt: skip


def _fails(operator) -> str:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException) as caught:
        operator.execute(_context())
    return str(caught.value)


def _snapshot(serving_dir: Path) -> dict[str, bytes]:
    """Everything in the serving dir but the release log (which may gain the failure's line)."""
    return {name: data for name, data in tree(serving_dir).items() if name != "releases.jsonl"}


@contextlib.contextmanager
def _mounted(*args: str, target: Path) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount {args} on {target} (the tests run as root): {done.stderr}"
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def published(local_storage, tmp_path):
    """A serving dir (made by the caller's mount) that already holds one small version and its log line."""

    def make(serving_dir: Path) -> str:
        small, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=60_000, seed=1)
        assert _operator(local_storage, small, serving_dir).execute(_context())["version"] == 2026040200
        return small

    return make


def test_a_host_too_small_is_refused_before_the_first_byte(local_storage, tmp_path, published, webhook):
    with _mounted("-t", "tmpfs", "-o", "size=1m", "tmpfs", target=tmp_path / "small") as mount:
        serving_dir = mount / "mnist"
        published(serving_dir)
        before = _snapshot(serving_dir)
        big, manifest = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=1_400_000, seed=2)
        message = _fails(_operator(local_storage, big, serving_dir))
        needed = manifest.total_bytes + len(manifest.to_json())  # every file and the manifest
        assert "failed the space check" in message and "nothing was written" in message
        assert f"the model needs {needed} bytes" in message
        assert _snapshot(serving_dir) == before and numeric_children(serving_dir) == ["2026040200"]
        assert release_lines(serving_dir)[-1]["event"] == "publication_failed"
        assert release_lines(serving_dir)[-1]["check"] == "space"
    [alert] = webhook.wait_for(1)
    text = alert["text"] + json.dumps(alert["blocks"])
    for expected in ("serve-a", str(serving_dir), "space", "bytes free", f"needs {needed} bytes"):
        assert expected in text, expected


def test_a_disk_filled_by_another_writer_during_the_transfer(local_storage, tmp_path, webhook):
    with _mounted("-t", "tmpfs", "-o", "size=8m", "tmpfs", target=tmp_path / "filling") as mount:
        serving_dir = mount / "mnist"
        serving_dir.mkdir()
        big, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=4_000_000, seed=3)
        started = threading.Event()

        def fill() -> None:  # another writer takes the room while the rate-limited transfer runs
            started.wait(10)
            time.sleep(0.5)
            with contextlib.suppress(OSError), open(mount / "other-writer.bin", "wb") as other:
                for _ in range(8):
                    other.write(b"\0" * (1 << 20))
                    other.flush()

        filler = threading.Thread(target=fill, daemon=True)
        filler.start()
        started.set()
        message = _fails(_operator(local_storage, big, serving_dir, rate_limit_bps=2_000_000))
        filler.join(30)
        assert "failed the space check" in message and "filled up during the transfer" in message
        assert sorted(p.name for p in serving_dir.iterdir()) == [".publish.lock"]  # staging removed
    [alert] = webhook.wait_for(1)
    assert "serve-a" in alert["text"] and "space" in alert["text"]


def test_a_read_only_serving_dir_is_named(local_storage, tmp_path, published, webhook):
    source = tmp_path / "rw" / "mnist"
    published(source)
    before = _snapshot(source)
    with _mounted("--bind", str(source), target=tmp_path / "ro-mnist") as serving_dir:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(serving_dir)], capture_output=True, text=True)
        assert remount.returncode == 0, remount.stderr
        other, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=50_000, seed=4)
        message = _fails(_operator(local_storage, other, serving_dir))
        assert "failed the read_only check" in message and "read-only filesystem" in message
        assert str(serving_dir) in message
    assert _snapshot(source) == before
    [alert] = webhook.wait_for(1)
    assert "read_only" in alert["text"] and str(serving_dir) in alert["text"]


def test_a_file_in_place_of_the_serving_dir_is_named(local_storage, tmp_path, webhook):
    serving_dir = tmp_path / "mnist"
    serving_dir.write_text("someone's notes")
    candidate, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=50_000, seed=5)
    message = _fails(_operator(local_storage, candidate, serving_dir))
    assert "failed the not_a_directory check" in message and f"{serving_dir} is a file" in message
    assert serving_dir.read_text() == "someone's notes"
    assert "not_a_directory" in webhook.wait_for(1)[0]["text"]


def test_a_version_directory_changed_by_hand_is_never_overwritten(local_storage, tmp_path, webhook):
    serving_dir = tmp_path / "serving" / "mnist"
    first, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=50_000, seed=6)
    assert _operator(local_storage, first, serving_dir).execute(_context())["version"] == 2026040200
    # Someone copies another model into the version directory by hand.
    other, _ = write_fake_candidate(local_storage, model="mnist", day=DAY, total_bytes=40_000, seed=7)
    version_dir = serving_dir / "2026040200"
    for path in list(version_dir.rglob("*"))[::-1]:
        path.unlink() if path.is_file() else path.rmdir()
    for name, data in tree(Path(local_storage.root) / other).items():
        (version_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (version_dir / name).write_bytes(data)
    by_hand = tree(version_dir)
    message = _fails(_operator(local_storage, first, serving_dir))
    assert "failed the conflict check" in message and "changed it by hand" in message
    assert tree(version_dir) == by_hand
    assert "conflict" in webhook.wait_for(1)[0]["text"]


RUN_AS_NOBODY = """
import json, sys
from types import SimpleNamespace
from airflow.sdk.exceptions import AirflowFailException
from tfship.config import StorageConfig
from tfship_airflow.publish import PublishModelOperator

root, candidate, serving_dir = sys.argv[1:4]
ti = SimpleNamespace(dag_id="tfship_daily", task_id="publish_model", map_index=0, try_number=1, max_tries=3,
                     log_url="http://localhost:8080/log", xcom_push=lambda **_: None)
operator = PublishModelOperator(task_id="publish_model", candidate=candidate, host="serve-a", serving_dir=serving_dir,
                                storage=StorageConfig(root), space_margin_bytes=0)
try:
    operator.execute({"ti": ti, "run_id": "manual__nobody"})
except AirflowFailException as err:
    print("FAILED " + str(err))
"""


def test_a_serving_dir_the_worker_may_not_write_is_named(tmp_path, webhook):
    # Root may write anywhere, so the worker runs as nobody over files nobody can read.
    shared = Path(tempfile.mkdtemp(prefix="tfship-nobody-"))
    try:
        os.chmod(shared, 0o755)
        storage = LocalStorage(f"file://{shared / 'storage'}")
        candidate, _ = write_fake_candidate(storage, model="mnist", day=DAY, total_bytes=50_000, seed=8)
        serving_dir = shared / "serving" / "mnist"
        serving_dir.mkdir(parents=True)  # root's, 0755: nobody may not write it
        for path in [shared, *shared.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.chmod(serving_dir, 0o755)
        home = shared / "home"
        home.mkdir()
        os.chown(home, 65534, 65534)
        env = {
            **os.environ, "HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"),
            "PYTHONPATH": os.pathsep.join(str(PROJECT_ROOT / p) for p in ("include", "plugins")),
        }  # fmt: skip
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", RUN_AS_NOBODY,
                   storage.root_uri, candidate, str(serving_dir)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=home)
        assert "FAILED " in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
        assert "failed the permission check" in done.stdout and "uid 65534" in done.stdout
        assert str(serving_dir) in done.stdout
        assert list(serving_dir.iterdir()) == []
        [alert] = webhook.wait_for(1)
        assert "permission" in alert["text"] and str(serving_dir) in alert["text"]
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)
