"""The dbt build as Airflow tasks (astronomer-cosmos): one task per model and one per model's tests.

Rendered from the precompiled manifest (no dbt command at DAG-parse time), dbt in-process
(dbtRunner). DuckDB takes one writer at a time: whatever runs dbt is in the one-slot `warehouse`
pool. The execution mode is a setting (RETAIL_DBT_EXECUTION_MODE), measured in the README:

* local: each model's task (and each tests task) runs dbt for its node; works under
  `airflow dags test`;
* watcher: one task runs `dbt build`, the per-node tasks report what it did; needs a scheduler.
"""

from __future__ import annotations

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

from retail_platform.settings import Settings
from retail_platform.warehouse.dbt_runner import dbt_env, manifest_path

WAREHOUSE_POOL = "warehouse"


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
    watcher = settings.dbt_execution_mode == "watcher"
    return DbtTaskGroup(
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
            invocation_mode=InvocationMode.DBT_RUNNER,
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


def report_after_whole_group(group: DbtTaskGroup, report) -> None:
    """Run ``report`` once every task of the build has finished (not only its last ones)."""
    for task_ in group.iter_tasks():
        task_ >> report


def failed_tasks_in_group(ti, dag_run, group_id: str = "dbt_build") -> list[str]:
    """The tasks of this run's build that failed themselves (not merely upstream of a failure)."""
    states = ti.get_task_states(dag_id=dag_run.dag_id, task_group_id=group_id, run_ids=[dag_run.run_id])
    return sorted(task_id for task_id, state in states.get(dag_run.run_id, {}).items() if state == "failed")
