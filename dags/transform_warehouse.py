"""
### transform_warehouse

Builds the warehouse with dbt from the lake's committed batches, every time extraction publishes
new batches (scheduled on any source's `retail://lake/raw/<source>` Asset). **Write-audit-publish:**
readers see a build only after every one of its tests passed.

1. `build_warehouse`, under the build lock (one build at a time, whatever starts it: a second one
   waits up to `RETAIL_WAREHOUSE_LOCK_WAIT_S`, then fails naming the holder): registers the lake's
   committed batches as sources (views on DuckDB, Spectrum tables on Redshift), runs
   `dbt source freshness` (stale sources announced), then one `dbt build` (in-process) into a build
   of its own (a DuckDB build file, or `<schema>__wap` schemas on Redshift), and audits it from dbt's
   `run_results.json`. The task log and XCom show every model and test: status, failing rows, time.
   A failed model or test fails the task at once (no retry rebuilds the same data) with **one alert**
   naming each failed node and its failing-row count; dbt that could not run at all (the warehouse
   unreachable) is an outage, retried.
2. `publish_warehouse`: only after a passing build, readers are switched to it atomically (a new
   read-only snapshot, or a schema rename in one transaction), and the
   `retail://warehouse/marts/analytics` Asset is published. `export_training_table` then writes
   `ratings_ml_training` to `lake/ml/` and publishes the Asset the retraining DAG waits for, and
   `announce_demand_spikes` tells marketing, once each, about the demand spikes happening now.

A failed build leaves the marts exactly as the last good build left them, and the run fails.

**Owner:** data-platform. **Target:** `DBT_TARGET` (local DuckDB, prod Redshift).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task
from retail_airflow.assets import ANALYTICS_MARTS, TRAINING_EXPORT, any_raw_lake_asset
from retail_airflow.dag_defaults import platform_default_args

from retail_platform.settings import Settings
from retail_platform.sources import source_names
from retail_platform.warehouse.transform import WAREHOUSE_POOL

SETTINGS = Settings.from_env()


@dag(
    dag_id="transform_warehouse",
    schedule=any_raw_lake_asset(source_names(SETTINGS.contracts_dir)),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=platform_default_args("data-platform", retries=2, execution_timeout=timedelta(minutes=30)),
    tags=["transform", "dbt", "warehouse"],
    doc_md=__doc__,
)
def transform_warehouse():
    @task(pool=WAREHOUSE_POOL)
    def build_warehouse(*, ti=None, dag_run=None) -> dict:
        from retail_airflow.warehouse_build import build_task

        return build_task(SETTINGS, ti=ti, dag_run=dag_run)

    @task(pool=WAREHOUSE_POOL, outlets=[ANALYTICS_MARTS])
    def publish_warehouse(build: dict, *, ti=None, dag_run=None, outlet_events=None) -> dict:
        from retail_airflow.warehouse_build import publish_task

        summary = publish_task(SETTINGS, build, ti=ti, dag_run=dag_run)  # includes data_as_of
        outlet_events[ANALYTICS_MARTS].extra = summary
        return summary

    @task(outlets=[TRAINING_EXPORT])
    def export_training_table(*, outlet_events=None) -> dict:
        from retail_platform.warehouse.export import export_training_table as export

        summary = export(SETTINGS)
        outlet_events[TRAINING_EXPORT].extra = summary
        return summary

    @task
    def announce_demand_spikes() -> dict:
        from retail_platform.dashboard.spike_alerts import announce_spikes

        return announce_spikes(SETTINGS)

    published = publish_warehouse(build_warehouse())
    published >> export_training_table()
    published >> announce_demand_spikes()


transform_warehouse()
