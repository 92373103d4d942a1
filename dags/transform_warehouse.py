"""
### transform_warehouse

Builds the warehouse with dbt from the lake's committed batches, every time extraction publishes
new batches (scheduled on any source's `retail://lake/raw/<source>` Asset). **Write-audit-publish:**
readers see a build only after every one of its tests passed.

1. `register_lake_sources`: the sources become views (DuckDB) or Spectrum tables (Redshift) over the
   batches committed so far, so the whole build sees one consistent set of batches.
2. `check_source_freshness`: `dbt source freshness` on `_extracted_at` (warn after 30 min, error
   after 1 h); stale sources are announced, and the build still brings in what there is.
3. `dbt_build`: one task per model and one per model's tests (astronomer-cosmos, from the
   precompiled manifest), in the one-slot `warehouse` pool, writing a build of its own (a DuckDB
   build file, or `<schema>__wap` schemas on Redshift).
4. `publish_warehouse`: only when the whole build passed, readers are switched to it atomically
   (a new read-only snapshot file, or a schema rename in one transaction), and the
   `retail://warehouse/marts/analytics` Asset is published. `export_training_table` then writes
   `ratings_ml_training` to `lake/ml/` and publishes the Asset the retraining DAG waits for, and
   `announce_demand_spikes` tells marketing, once each, about the demand spikes happening now.
5. `report_failed_build`: when anything failed, one alert names the failed tests and how many rows
   each found; the marts stay exactly as the last good build left them.

**Owner:** data-platform. **Target:** `DBT_TARGET` (local DuckDB, prod Redshift).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task
from retail_airflow.assets import ANALYTICS_MARTS, TRAINING_EXPORT, any_raw_lake_asset
from retail_airflow.dag_defaults import platform_default_args
from retail_airflow.dbt import (
    WAREHOUSE_POOL,
    dbt_build_group,
    failed_tasks_in_group,
    report_after_whole_group,
)

from retail_platform.settings import Settings
from retail_platform.sources import source_names

SETTINGS = Settings.from_env()


@dag(
    dag_id="transform_warehouse",
    schedule=any_raw_lake_asset(source_names(SETTINGS.contracts_dir)),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=8,  # watcher mode: the reporting tasks run side by side, within a small machine
    default_args=platform_default_args("data-platform", retries=2, execution_timeout=timedelta(minutes=30)),
    tags=["transform", "dbt", "warehouse"],
    doc_md=__doc__,
)
def transform_warehouse():
    @task(pool=WAREHOUSE_POOL)
    def register_lake_sources() -> None:
        from retail_platform.warehouse.transform import prepare_build

        prepare_build(SETTINGS)

    @task(pool=WAREHOUSE_POOL)
    def check_source_freshness() -> dict:
        from retail_platform.warehouse.freshness import check_freshness

        return check_freshness(SETTINGS)

    @task(pool=WAREHOUSE_POOL, outlets=[ANALYTICS_MARTS])
    def publish_warehouse(*, outlet_events=None) -> dict:
        from retail_platform.warehouse.transform import publish

        summary = publish(SETTINGS)  # includes data_as_of: the newest order in the marts
        outlet_events[ANALYTICS_MARTS].extra = summary
        return summary

    @task(pool=WAREHOUSE_POOL, outlets=[TRAINING_EXPORT])
    def export_training_table(*, outlet_events=None) -> dict:
        from retail_platform.warehouse.export import export_training_table as export

        summary = export(SETTINGS)
        outlet_events[TRAINING_EXPORT].extra = summary
        return summary

    @task
    def announce_demand_spikes() -> dict:
        from retail_platform.dashboard.spike_alerts import announce_spikes

        return announce_spikes(SETTINGS)

    @task(pool=WAREHOUSE_POOL, trigger_rule="all_done")
    def report_failed_build(*, ti=None, dag_run=None) -> dict:
        from retail_platform.warehouse.transform import report_failed_build as report

        failed = failed_tasks_in_group(ti, dag_run)
        return report(SETTINGS, failed) if failed else {"failed_nodes": []}

    build = dbt_build_group(SETTINGS)
    published = register_lake_sources() >> check_source_freshness() >> build >> publish_warehouse()
    published >> export_training_table()
    published >> announce_demand_spikes()
    report_after_whole_group(build, report_failed_build())


transform_warehouse()
