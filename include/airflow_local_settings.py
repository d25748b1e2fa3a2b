"""Airflow's local settings module (imported by name from sys.path): this project's cluster policies.

Only the queue routing of the per-host serving tasks (tfship_airflow.routing). A deployment with
its own airflow_local_settings imports `task_instance_mutation_hook` from there instead.
"""

from tfship_airflow.routing import task_instance_mutation_hook

__all__ = ["task_instance_mutation_hook"]
