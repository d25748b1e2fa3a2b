"""Clear a task and its downstream in an existing run, then let that run go on: `resume_run.py DAG RUN TASK`.

The clear is what the UI's Clear (with "Downstream") does through the REST API's
`clearTaskInstances` for one run: the same relatives, `dag.clear(..., run_id=...)` and
`clear_task_instances` (the CLI's `tasks clear` selects runs by date only). Then, as no scheduler
runs here, `dag.test()`'s own loop drives the run: the run is kept (`dags test` would delete it
and make a new one), set to running, and its cleared task instances are scheduled and run like
any others, in a process whose environment (TFSHIP_PARAM_DEFAULTS, say) is what a worker sees
after on-call changed it.
"""

from __future__ import annotations

import os
import sys
from unittest import mock


def clear_with_downstream(dag_id: str, run_id: str, task_id: str) -> list[str]:
    """Clear `task_id` and its downstream tasks in one run, as the REST API does; return what was cleared."""
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import clear_task_instances, find_relevant_relatives
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        dag = DBDagBag().get_dag_for_run(run, session=session)
        normal, mapped = {task_id}, set()
        relatives = find_relevant_relatives(
            normal, mapped, dag=dag, run_id=run_id, direction="downstream", session=session
        )
        normal.update(t for t in relatives if not isinstance(t, tuple))
        mapped.update(t for t in relatives if isinstance(t, tuple))
        markers = [*normal, *((t, m) for t, m in mapped if t not in normal)]
        tis = dag.clear(dry_run=True, task_ids=markers, run_id=run_id, session=session)
        clear_task_instances(list(tis), session, DagRunState.QUEUED)
        return sorted({ti.task_id for ti in tis})


def resume(dag_id: str, run_id: str) -> str:
    """Run the cleared task instances of the run to the end; return the run's final state."""
    import airflow.models.dagrun as dagrun_module
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dagrun import DagRun
    from airflow.serialization.definitions.dag import SerializedDAG
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags[dag_id]
    with create_session() as session:
        query = select(DagRun.logical_date).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        logical_date = session.scalar(query)

    def existing_run(*, dag, session, **_ignored):
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id))
        run.state = DagRunState.RUNNING
        session.commit()
        run.dag = dag  # what create_dagrun would have attached: update_state needs it
        return run

    with (
        mock.patch.object(dagrun_module, "get_or_create_dagrun", existing_run),
        mock.patch.object(SerializedDAG, "clear_dags", lambda *args, **kwargs: 0),
    ):
        return str(dag.test(logical_date=logical_date).state)


def main(argv: list[str]) -> int:
    """Clear, resume, print both; exit 0 when the run ends in success."""
    dag_id, run_id, task_id = argv
    cleared = clear_with_downstream(dag_id, run_id, task_id)
    print(f"CLEARED {','.join(cleared)}", flush=True)
    state = resume(dag_id, run_id)
    print(f"RESUMED run_id={run_id} state={state}", flush=True)
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
