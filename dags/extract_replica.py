"""
### extract_<source>

Extracts the `<source>` read replica into the Parquet lake, one **atomic batch per table and data
interval** (`<prefix>/<table>/batch_id=<interval>/`, manifest written, then the table's index
switched). One such DAG per source contract in `RETAIL_CONTRACTS_DIR`.

* **Schedule:** `RETAIL_EXTRACT_SCHEDULE` (cron, default hourly; down to `* * * * *`). Each run
  reads its data interval, so a rerun or backfill rewrites exactly that interval's batches. One run
  at a time (`max_active_runs=1`, no catch-up): a run longer than the interval delays the next, whose
  batches start at the tables' watermarks minus their lookback, so a skipped interval loses no row.
  A manual run triggered with the conf `{"read_to_now": true}` (as `./platform run` does) reads the
  interval that holds now, up to now, instead of the last complete one (`extract/intervals.py`).
* **Tasks:** `plan_batches` reads `information_schema` once and plans every table of the source
  contract; `extract_table` is mapped per table in the `<pool>` pool (caps concurrent queries on
  the replica, connection `<connection>`) with a statement timeout; `publish` emits the
  `<asset>` Asset that `transform_warehouse` is scheduled on.
* **Engines:** `RETAIL_EXTRACT_ENGINE=local` streams with connectorx in the worker; `glue` runs the
  same extraction skeleton as an AWS Glue (Spark) job per table.
* **Failures:** a replica that does not answer, lags or stopped replicating is announced once to
  the downstream users (data will be stale), and again on recovery; the plan retries with backoff
  (at most about 3 minutes in all). A configuration problem (a missing or malformed connection, a
  wrong password, a replica that never answered, an invalid contract) fails at once, without
  retries, and is announced as a configuration problem.
  A table with a breaking schema change is paused by the plan (the schema watch's rule): its task
  is skipped with the reason until the contract accepts the change or it is reverted, and its
  owners hear when it resumes. A failed critical table withholds the Asset event.
* **Owner:** data-platform.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task
from retail_airflow.assets import raw_lake_asset
from retail_airflow.dag_defaults import platform_default_args
from retail_airflow.notifiers import PlatformFailureNotifier, SourceOutageNotifier

from retail_platform.errors import StorageUnusable
from retail_platform.extract.publish import STORAGE_FAULT_KEY
from retail_platform.extract.skeleton import ExtractEngine
from retail_platform.settings import Settings
from retail_platform.sources import SourceNames, source_names

SETTINGS = Settings.from_env()  # environment only: no database or Variable at parse time


def document(names: SourceNames) -> str:
    replacements = {
        "<source>": names.name,
        "<prefix>": names.lake_prefix,
        "<pool>": names.pool,
        "<connection>": names.connection_id,
        "<asset>": names.asset_uri,
    }
    text = __doc__
    for placeholder, value in replacements.items():
        text = text.replace(placeholder, value)
    return text


def extraction_dag(names: SourceNames):
    lake_asset = raw_lake_asset(names)

    @dag(
        dag_id=names.extract_dag_id,
        schedule=CronDataIntervalTimetable(SETTINGS.extract_schedule, timezone="UTC"),
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        default_args=platform_default_args("data-platform", execution_timeout=timedelta(minutes=45)),
        tags=["extract", names.name, "lake"],
        doc_md=document(names),
    )
    def extract():
        @task(
            retries=3,
            retry_delay=timedelta(seconds=15),
            max_retry_delay=timedelta(minutes=1),
            execution_timeout=timedelta(minutes=5),
            on_failure_callback=SourceOutageNotifier(names.name),
        )
        def plan_batches(
            data_interval_start=None, data_interval_end=None, dag_run=None, ti=None
        ) -> list[dict]:
            from retail_platform.extract.intervals import interval_to_read
            from retail_platform.extract.runner import plan_run

            start, end = interval_to_read(
                SETTINGS.extract_schedule,
                data_interval_start,
                data_interval_end,
                getattr(dag_run, "conf", None),
            )
            plans = plan_run(SETTINGS, names.name, start, end, run_url=getattr(ti, "log_url", None))
            return [plan.to_dict() for plan in plans]  # JSON through XCom

        plans = plan_batches()

        if ExtractEngine(SETTINGS.extract_engine) is ExtractEngine.GLUE:
            from retail_airflow.glue import glue_extraction

            results = glue_extraction(SETTINGS, names, plans)
        else:
            # A lake that cannot be written is told once for the run, by publish, naming every table.
            @task(
                pool=names.pool,
                map_index_template="{{ table }}",
                on_failure_callback=PlatformFailureNotifier(told_by_the_run=(StorageUnusable,)),
            )
            def extract_table(plan: dict, ti=None) -> dict:
                from airflow.sdk.exceptions import AirflowSkipException

                from retail_platform.extract.runner import run_local
                from retail_platform.extract.skeleton import BatchSkipped

                get_current_context()["table"] = plan["table"]
                try:
                    return run_local(SETTINGS, plan)
                except BatchSkipped as skipped:
                    raise AirflowSkipException(str(skipped)) from None
                except StorageUnusable as fault:
                    ti.xcom_push(key=STORAGE_FAULT_KEY, value={"table": plan["table"], "error": str(fault)})
                    raise

            results = extract_table.expand(plan=plans)

        @task(outlets=[lake_asset], trigger_rule="all_done")
        def publish(plans: list[dict] | None, results, *, ti=None, outlet_events=None) -> dict:
            from retail_platform.extract.publish import summarise_run

            faults = ti.xcom_pull(task_ids="extract_table", key=STORAGE_FAULT_KEY)
            summary = summarise_run(plans, results, faults if isinstance(faults, list) else [faults])
            outlet_events[lake_asset].extra = summary
            return summary

        publish(plans, results)

    return extract()


for _names in source_names(SETTINGS.contracts_dir):
    extraction_dag(_names)
