"""Manual rollback of a served model on one host: back to the previous version or to a named one."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from tfship.config import Settings

SETTINGS = Settings.from_env()
HOSTS = sorted(host.name for host in SETTINGS.serving_hosts)

DOC = """
### serving_rollback
Moves versions out of the host's serving dir into `.rejected/` (the publisher never
reuses their numbers), waits until the version left on top is AVAILABLE and answers its own
canary set, and records a `"event": "rollback"` line in `releases.jsonl`.
`target`: `previous` rejects the newest version; a number rejects every version above it.
"""

with DAG(
    dag_id="serving_rollback",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0},
    params={
        "model": Param(SETTINGS.model, type="string", pattern="^[a-z0-9][a-z0-9_-]*$", title="Model"),
        "host": Param(HOSTS[0], type="string", enum=HOSTS, title="Serving host"),
        "target": Param(
            "previous",
            type="string",
            pattern="^(previous|[0-9]{10})$",
            title="Target version",
            description="'previous', or the version number (YYYYMMDDnn) to serve again.",
        ),
        "rest_port": Param(
            SETTINGS.serving_rest_port, type="integer", minimum=1, maximum=65535, title="TF Serving REST port"
        ),
        "timeout_s": Param(600, type="integer", minimum=10, maximum=7200, title="Wait for the old version (s)"),
    },
    doc_md=DOC,
    tags=["tfship", "serving"],
) as dag:

    @task(multiple_outputs=False)
    def rollback_serving(params=None, **context) -> dict:
        """Reject the versions above the target and wait until the target serves again."""
        import logging

        from tfship_airflow.rollback import rollback_on_demand

        return rollback_on_demand(SETTINGS, params, context, log=logging.getLogger("airflow.task"))

    rollback_serving()
