"""Which Celery queue a task instance runs on: each serving host's copy of the per-host tasks on
that host's own queue, `serving-<host>`, so a host's publication lands on its own disk and its
deploy and canary run next to its TF Serving. Everything else stays on the default queue.

Airflow calls `task_instance_mutation_hook` (a cluster policy, exported by the top-level
`airflow_local_settings` module) when it creates a task instance, mapped copies included; copy i
of a per-host task is host i of the configured serving hosts, the order the DAG maps them in.
Executors without queues (Local, `dags test`) ignore the queue.
"""

from __future__ import annotations

from typing import Any

# (DAG id, task id) of the tasks mapped one copy per serving host, in TFSHIP_SERVING_DIR's order.
HOST_TASKS = frozenset({("tfship_daily", "publish_model"), ("tfship_daily", "release_host")})
QUEUE_PREFIX = "serving-"


def host_queue(host: str) -> str:
    """The Celery queue of serving host `host`: `serving-<host>`, or the name itself when it already
    starts so (the stack's hosts `serving-1` and `serving-2` listen on queues of their own names)."""
    return host if host.startswith(QUEUE_PREFIX) else f"{QUEUE_PREFIX}{host}"


def task_instance_mutation_hook(task_instance: Any, dag_run: Any = None) -> None:
    """Put copy i of a per-host task on host i's queue."""
    if (task_instance.dag_id, task_instance.task_id) not in HOST_TASKS or task_instance.map_index < 0:
        return
    from tfship.config import Settings

    hosts = Settings.from_env().serving_hosts
    if task_instance.map_index < len(hosts):
        task_instance.queue = host_queue(hosts[task_instance.map_index].name)
