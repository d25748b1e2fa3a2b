"""Putting a DAG built inside a test into the metadata DB, as the DAG processor would for a file."""

from __future__ import annotations

from types import SimpleNamespace


def register_dag(dag) -> None:
    """Serialize `dag` into the metadata DB under the dags-folder bundle (made first if this DB has none yet)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db

    # A fresh DB has no bundle rows until a DAG processor (or `airflow dags test`) ran once.
    DagBundlesManager().sync_bundles_to_db()
    bag = SimpleNamespace(dags={dag.dag_id: dag}, import_errors={}, dag_warnings=set(), bundle_path=None)
    sync_bag_to_db(bag, "dags-folder", None)
