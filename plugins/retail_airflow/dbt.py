"""The dbt build as Airflow tasks (astronomer-cosmos): one task per model and one per model's tests.

Rendered from the precompiled manifest (no dbt command at DAG-parse time), run in-process with
dbtRunner, in a one-slot pool because DuckDB takes one writer at a time.
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
            f"{manifest} is missing: precompile it with `./platform retail warehouse prepare` (dbt parse)"
        )
    project_dir = settings.dbt_project_dir
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
            execution_mode=ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.DBT_RUNNER,
            dbt_project_path=project_dir,
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
        operator_args={"install_deps": False, "pool": WAREHOUSE_POOL},
    )
