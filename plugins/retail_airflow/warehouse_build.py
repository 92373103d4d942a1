"""The warehouse build as one Airflow task: ``dbt build`` in-process under the build lock.

Its per-cycle cost does not grow with the number of models (one task, one dbt start-up). The
per-model view stays in the UI: the task log holds a table of every node's status, failing rows
and time, and the task's XCom (``return_value`` on success, ``dbt_results`` on failure) holds the
same as data. Why not astronomer-cosmos: see docs/notes/transform.md.
"""

from __future__ import annotations

from retail_platform.settings import Settings
from retail_platform.warehouse.build_lock import TaskTry
from retail_platform.warehouse.transform import BuildFailed, build, publish


def run_holder(dag_run) -> str:
    """How a run names itself to a build that waits for it."""
    return f"{dag_run.dag_id} run {dag_run.run_id}" if dag_run is not None else "an Airflow task"


def task_try(ti, dag_run) -> TaskTry | None:
    """This try of this task: a later try stops an earlier one Airflow gave up on (build_lock.py)."""
    if ti is None or dag_run is None:
        return None
    return TaskTry(f"{dag_run.dag_id}/{dag_run.run_id}/{ti.task_id}", int(ti.try_number))


def build_task(settings: Settings, *, ti=None, dag_run=None) -> dict:
    """Build and audit; returns the per-node summary. A failed build raises BuildFailed (its one
    alert goes out through the failure notifier; never retried)."""
    try:
        report = build(settings, holder=run_holder(dag_run), task_try=task_try(ti, dag_run))
    except BuildFailed as failed:
        if ti is not None:
            ti.xcom_push(key="dbt_results", value=failed.report.summary())
        raise
    return report.summary()


def publish_task(settings: Settings, build: dict, *, ti=None, dag_run=None) -> dict:
    return publish(settings, build["build_id"], holder=run_holder(dag_run), task_try=task_try(ti, dag_run))
