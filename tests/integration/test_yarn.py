"""Spark on a real YARN (MiniYARNCluster next to MiniDFSCluster, one JVM, loopback only).

pyspark's own spark-submit, `--master yarn`, client and cluster mode, executors on the venv's
python, pyspark's jars read in place (`spark.yarn.jars=local:...`). Each job's result is read
back from HDFS over WebHDFS; expected values are computed here, not by the job.
"""

from __future__ import annotations

import collections
import json
import random
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.cluster import descendants

pytestmark = [pytest.mark.spark, pytest.mark.hdfs, pytest.mark.yarn]
APP = Path(__file__).with_name("yarn_app.py")
LOOPBACK_HOSTS = {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]", "localhost"}


# -- WebHDFS, plain (the test checks the cluster, not the project's storage layer) ----------


def webhdfs(cluster, path: str, op: str, method: str = "GET", data: bytes | None = None, **params) -> bytes:
    query = "&".join([f"op={op}", "user.name=root", *(f"{k}={v}" for k, v in params.items())])
    request = urllib.request.Request(f"{cluster.webhdfs_url}/webhdfs/v1{path}?{query}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=30) as answer:  # follows the DataNode redirect
        return answer.read()


def hdfs_put(cluster, path: str, data: bytes) -> None:
    """WebHDFS CREATE: the NameNode answers 307 with a DataNode address (urllib won't follow a PUT)."""
    try:
        webhdfs(cluster, path, "CREATE", "PUT", overwrite="true")
        raise AssertionError("the NameNode did not redirect the CREATE")
    except urllib.error.HTTPError as redirect:
        if redirect.code != 307:
            raise
        location = redirect.headers["Location"]
    urllib.request.urlopen(urllib.request.Request(location, data=data, method="PUT"), timeout=30).close()


def hdfs_text_lines(cluster, directory: str) -> list[str]:
    """Every line of every part-* file in a Spark text output directory (which must be complete)."""
    listing = json.loads(webhdfs(cluster, directory, "LISTSTATUS"))["FileStatuses"]["FileStatus"]
    names = {status["pathSuffix"] for status in listing}
    assert "_SUCCESS" in names, f"{directory} has no _SUCCESS: {sorted(names)}"
    lines: list[str] = []
    for name in sorted(n for n in names if n.startswith("part-")):
        lines += webhdfs(cluster, f"{directory}/{name}", "OPEN").decode().splitlines()
    return lines


def summary(cluster, output: str) -> dict:
    (line,) = hdfs_text_lines(cluster, f"{output}/summary")
    return json.loads(line)


def submit(cluster, *app_args: str, deploy_mode: str = "client", conf=None, timeout: float = 600):
    """Run spark-submit to completion: (return code, stdout + stderr, seconds)."""
    command = cluster.submit_command(APP, *app_args, deploy_mode=deploy_mode, conf=conf)
    started = time.monotonic()
    done = subprocess.run(command, env=cluster.spark_env(), capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def rm_apps(cluster) -> list[dict]:
    with urllib.request.urlopen(f"{cluster.rm_webapp_url}/ws/v1/cluster/apps", timeout=10) as answer:
        return (json.load(answer).get("apps") or {}).get("app") or []


def rm_app(cluster, app_id: str) -> dict:
    with urllib.request.urlopen(f"{cluster.rm_webapp_url}/ws/v1/cluster/apps/{app_id}", timeout=10) as answer:
        return json.load(answer)["app"]


# -- (a), (b), (f): a 2-executor job reading and writing hdfs:// in both deploy modes, and
#    nothing listening beyond loopback while it runs --------------------------------------


@pytest.mark.parametrize("deploy_mode", ["client", "cluster"])
def test_word_count_on_two_executors_on_loopback_only(yarn_cluster, tmp_path, deploy_mode):
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(2000)]
    expected = collections.Counter(word for line in lines for word in line.split())
    base = f"/tests/wordcount-{deploy_mode}"
    hdfs_put(yarn_cluster, f"{base}/input.txt", ("\n".join(lines) + "\n").encode())

    # After counting, both executors hold a task until the test has looked at every socket.
    signal_dir = tmp_path / "signals"
    signal_dir.mkdir()
    source, output = f"{yarn_cluster.rpc_uri}{base}/input.txt", f"{yarn_cluster.rpc_uri}{base}/out"
    found, by_role, seconds = sockets_while_held(yarn_cluster, tmp_path, signal_dir, deploy_mode, source, output)

    counts = dict(json.loads(line) for line in hdfs_text_lines(yarn_cluster, f"{base}/out/counts"))
    assert counts == dict(expected)
    result = summary(yarn_cluster, f"{base}/out")
    assert result["master"] == "yarn" and result["deploy_mode"] == deploy_mode
    assert result["held"] == [0, 1], result
    app_id = result["application_id"]
    # Tasks ran in two distinct YARN containers of this application (the two executors).
    assert len(result["task_containers"]) == 2, result
    assert all(app_id.removeprefix("application_") in c for c in result["task_containers"]), result
    if deploy_mode == "cluster":  # the driver ran inside the ApplicationMaster's container (#1)
        assert result["driver_container"].endswith("_01_000001"), result
    else:
        assert result["driver_container"] == "", result
    app = rm_app(yarn_cluster, app_id)  # what the Airflow provider's yarn_track_via_rm_api reads
    assert (app["state"], app["finalStatus"]) == ("FINISHED", "SUCCEEDED"), app
    print(f"{deploy_mode} word count: {seconds:.1f}s end to end, {app['elapsedTime'] / 1000:.1f}s in YARN")

    outside = [(pid, address) for pid, address in found if address.rsplit(":", 1)[0] not in LOOPBACK_HOSTS]
    assert outside == [], outside
    # NameNode, DataNode, ResourceManager and NodeManager servers (14 here); each executor's RPC
    # and block manager; the driver's RPC, block manager and UI: in the spark-submit process in
    # client mode, in the ApplicationMaster's container in cluster mode.
    assert by_role["cluster"] >= 10, found
    if deploy_mode == "client":
        assert by_role["client"] >= 3 and by_role["container"] >= 4, found
    else:
        assert by_role["container"] >= 7, found
    print(f"listening sockets, all on loopback: {dict(by_role)}")


# -- (c): a 2-task barrier stage sees both tasks' addresses ---------------------------------


def test_two_task_barrier_stage_completes_with_both_addresses(yarn_cluster):
    output = f"{yarn_cluster.rpc_uri}/tests/barrier-2"
    code, log, _ = submit(yarn_cluster, "barrier", "2", output)
    assert code == 0, log[-4000:]
    tasks = sorted(summary(yarn_cluster, "/tests/barrier-2")["tasks"], key=lambda t: t["partition"])
    assert [t["partition"] for t in tasks] == [0, 1]
    addresses = tasks[0]["addresses"]
    assert len(addresses) == 2 and len(set(addresses)) == 2, tasks
    assert tasks[1]["addresses"] == addresses, "both tasks see the same ordered address list"
    assert {a.rsplit(":", 1)[0] for a in addresses} <= LOOPBACK_HOSTS, addresses
    assert len({t["container"] for t in tasks}) == 2, "one task per executor container"


# -- (d): more than the cluster's maximum allocation fails at submission -------------------

MEMORY_REFUSAL = (
    "Required executor memory (4096 MB), offHeap memory (0) MB, overhead (409 MB), and PySpark memory (0 MB) "
    "is above the max threshold (2048 MB) of this cluster! Please check the values of "
    "'yarn.scheduler.maximum-allocation-mb' and/or 'yarn.nodemanager.resource.memory-mb'."
)
VCORES_REFUSAL = (
    "org.apache.hadoop.yarn.exceptions.InvalidResourceRequestException: Invalid resource request! Cannot allocate "
    "containers as requested resource is greater than maximum allowed allocation. Requested resource "
    "type=[vcores], Requested resource=<memory:896, vCores:8>, maximum allowed allocation=<memory:2048, vCores:4>"
)


@pytest.mark.parametrize(
    ("conf", "reason", "reaches_rm"),
    [
        # Spark's client compares memory with the maximum the ResourceManager reported for the
        # new application, and refuses before submitting anything.
        ({"spark.executor.memory": "4g"}, MEMORY_REFUSAL, False),
        # Cores Spark does not pre-check: the ResourceManager refuses the AM's container request.
        ({"spark.executor.cores": "8"}, VCORES_REFUSAL, True),
    ],
    ids=["memory", "vcores"],
)
def test_request_above_maximum_allocation_fails_at_once_with_the_reason(yarn_cluster, conf, reason, reaches_rm):
    known = {app["id"] for app in rm_apps(yarn_cluster)}
    code, log, seconds = submit(yarn_cluster, "barrier", "2", f"{yarn_cluster.rpc_uri}/tests/never", conf=conf)
    assert code != 0
    assert reason in log, log[-4000:]
    assert seconds < 90, f"took {seconds:.0f}s"  # spark-submit's own start is most of it
    new = [app for app in rm_apps(yarn_cluster) if app["id"] not in known]
    if reaches_rm:
        # The AM itself unregisters: state FINISHED, final status FAILED, the RM's text kept.
        assert [(a["state"], a["finalStatus"]) for a in new] == [("FINISHED", "FAILED")], new
        assert "InvalidResourceRequestException" in new[0]["diagnostics"], new
    else:
        assert new == [], "nothing was submitted"


# -- (e): a barrier stage that can never get its slots fails within a minute ----------------


def test_barrier_stage_needing_more_slots_than_exist_fails_fast(yarn_cluster):
    code, log, _ = submit(yarn_cluster, "barrier", "3", f"{yarn_cluster.rpc_uri}/tests/barrier-3")
    assert code != 0
    assert "org.apache.spark.scheduler.BarrierJobSlotsNumberCheckFailed: [SPARK-24819]: Barrier execution mode" in log
    assert "Barrier stage in job 0 requires 3 slots, but only 2 are available." in log, log[-4000:]
    took = re.search(r"Job 0 failed: collect at .*, took ([0-9.]+) ms", log)
    assert took, log[-4000:]
    assert float(took.group(1)) < 60_000, f"the job failed only after {took.group(1)} ms"


# -- helpers for (f): sockets of the cluster, the containers and spark-submit -------------


def listeners(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every TCP/UDP socket that one of `pids` listens on."""
    out = subprocess.run(["ss", "-H", "-l", "-t", "-u", "-n", "-p"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        for pid in re.findall(r"pid=(\d+)", line):
            if int(pid) in pids:
                found.append((int(pid), fields[4]))
    return found


def sockets_while_held(cluster, tmp_path: Path, signal_dir: Path, deploy_mode: str, *app_args: str):
    """Run `count ... <signal_dir>`; once both executors hold, list every listening socket, then release."""
    command = cluster.submit_command(APP, "count", *app_args, str(signal_dir), deploy_mode=deploy_mode)
    log_path = tmp_path / "spark-submit.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        driver = subprocess.Popen(command, env=cluster.spark_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while len(list(signal_dir.glob("started-*"))) < 2:  # both executors are running a task
            assert driver.poll() is None, log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.5)
        cluster_pid = cluster.process.pid
        containers = set(descendants(cluster_pid))
        client = {driver.pid, *descendants(driver.pid)}
        found = listeners({cluster_pid} | containers | client)
    finally:
        (signal_dir / "release").touch()
    assert driver.wait(timeout=300) == 0, log_path.read_text()[-4000:]
    assert len({pid for pid, _ in found if pid in containers}) >= 2, found
    by_role = collections.Counter(
        "cluster" if pid == cluster_pid else "container" if pid in containers else "client" for pid, _ in found
    )
    return found, by_role, time.monotonic() - started
