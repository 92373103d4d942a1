"""The dbt build as Airflow tasks (astronomer-cosmos): one task per model and one per model's tests.

Rendered from the precompiled manifest (no dbt command at DAG-parse time), dbt in-process
(dbtRunner). DuckDB takes one writer at a time: whatever runs dbt is in the one-slot `warehouse`
pool. The execution mode is a setting (RETAIL_DBT_EXECUTION_MODE), measured in the README:

* build_first (default): one task runs `dbt build`; then one task per model and per model's tests
  reports what it did (cosmos' watcher tasks, placed after the build). Works wherever tasks run one
  at a time (`airflow dags test`, `./platform run`) and under any scheduler: the transform costs one
  dbt build plus the reports, not one dbt start-up per node;
* watcher: the same tasks report while the build goes (deferred to the triggerer); needs a scheduler
  with a triggerer (`./platform up`);
* local: each model's task (and each tests task) runs dbt for its node.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

from cosmos import (
    DbtTaskGroup,
    ExecutionConfig,
    ExecutionMode,
    InvocationMode,
    LoadMode,
    ProfileConfig,
    ProjectConfig,
    RenderConfig,
    TestBehavior,
)
from cosmos.constants import PRODUCER_WATCHER_DONE_TASK_ID, PRODUCER_WATCHER_TASK_ID

from retail_platform.settings import Settings
from retail_platform.warehouse.dbt_runner import dbt_env, manifest_path
from retail_platform.warehouse.transform import WAREHOUSE_POOL


class DbtExecution(StrEnum):
    BUILD_FIRST = "build_first"
    WATCHER = "watcher"
    LOCAL = "local"


class ManifestMissing(FileNotFoundError):
    pass


def dbt_build_group(
    settings: Settings,
    *,
    group_id: str = "dbt_build",
    select: list[str] | None = None,
    exclude: list[str] | None = None,
) -> DbtTaskGroup:
    manifest = manifest_path(settings)
    if not manifest.exists():
        raise ManifestMissing(
            f"{manifest} is missing: precompile it with `./platform retail warehouse prepare` (dbt compile)"
        )
    project_dir = settings.dbt_project_dir
    mode = DbtExecution(settings.dbt_execution_mode)
    watcher = mode is not DbtExecution.LOCAL
    group = DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(
            manifest_path=manifest, project_name="retail", env_vars=dbt_env(settings)
        ),
        profile_config=ProfileConfig(
            profile_name="retail",
            target_name=settings.dbt_target,
            profiles_yml_filepath=project_dir / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.WATCHER if watcher else ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.SUBPROCESS
            if mode is DbtExecution.BUILD_FIRST
            else InvocationMode.DBT_RUNNER,
            dbt_executable_path=str(Path(sys.executable).parent / "dbt"),
            dbt_project_path=project_dir,
            # Watcher: only the task that runs `dbt build` writes DuckDB, so it alone takes the pool.
            setup_operator_args={"pool": WAREHOUSE_POOL} if watcher else None,
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.AFTER_EACH,
            # A test with several parents (relationships, cross-model checks) runs in its own task
            # after all of them, not with the first parent's tests.
            should_detach_multiple_parents_tests=True,
            select=select or [],
            exclude=exclude or [],
            emit_datasets=False,  # the DAG publishes its own Assets once the whole build passed
        ),
        # A failed node is reported once for the whole build (report_failed_build), not per task.
        operator_args={"install_deps": False, "on_failure_callback": None}
        | ({} if watcher else {"pool": WAREHOUSE_POOL}),
    )
    if mode is DbtExecution.BUILD_FIRST:
        report_after_the_build(group)
    return group


def report_after_the_build(group: DbtTaskGroup) -> None:
    """The per-node tasks start once the build is over: each finds its node's result at its first
    look and never waits (nor defers) for a build that has not run yet."""
    producer = next(t for t in group.iter_tasks() if t.task_id.endswith(f".{PRODUCER_WATCHER_TASK_ID}"))
    inside = {t.task_id for t in group.iter_tasks()}
    for task_ in group.iter_tasks():
        if task_ is producer or task_.task_id.endswith(f".{PRODUCER_WATCHER_DONE_TASK_ID}"):
            continue
        if not set(task_.upstream_task_ids) & inside:  # a root of the dbt graph
            producer >> task_


def report_after_whole_group(group: DbtTaskGroup, report) -> None:
    """Run ``report`` once every task of the build has finished (not only its last ones)."""
    for task_ in group.iter_tasks():
        task_ >> report


def failed_tasks_in_group(ti, dag_run, group_id: str = "dbt_build") -> list[str]:
    """The tasks of this run's build that failed themselves (not merely upstream of a failure)."""
    states = ti.get_task_states(dag_id=dag_run.dag_id, task_group_id=group_id, run_ids=[dag_run.run_id])
    return sorted(task_id for task_id, state in states.get(dag_run.run_id, {}).items() if state == "failed")
