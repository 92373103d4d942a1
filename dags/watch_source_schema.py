"""
### watch_<source>_schema

Watches the `<source>` replica's schema every 10 minutes (`RETAIL_SCHEMA_WATCH_SCHEDULE`) with one
light read of `information_schema` (tables, columns, types, nullability, keys, defaults). One such
DAG per source contract in `RETAIL_CONTRACTS_DIR`.

* **Compares** the live schema with the source contract (what the platform accepted) and with the
  last schema seen (kept with its history beside the lake).
* **Classifies** each change: table added/dropped, column added/dropped, likely rename, type
  widened/narrowed/changed, nullability, primary key, cursor lost; additive or breaking, with the
  downstream impact from the dbt manifest's column lineage (models, exposures, training columns).
* **Protects** the pipeline: a breaking change pauses extraction of that table only, until the
  contract accepts it (or the change is reverted); additive changes flow through.
* **Tells** the table's owners on Slack (`slack_alerts` connection; otherwise the log and a file):
  once per change, again as a reminder while a breaking one stays unresolved
  (`RETAIL_SCHEMA_REMINDER_HOURS`). An unreachable replica or replication lag over
  `RETAIL_MAX_REPLICATION_LAG_S` is announced once to the downstream channel, and its end too.

**Owner:** data-platform.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import CronTriggerTimetable, dag, task
from retail_airflow.dag_defaults import platform_default_args

from retail_platform.settings import Settings
from retail_platform.sources import SourceNames, source_names

SETTINGS = Settings.from_env()


def watch_dag(names: SourceNames):
    @dag(
        dag_id=names.watch_dag_id,
        schedule=CronTriggerTimetable(SETTINGS.schema_watch_schedule, timezone="UTC"),
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        default_args=platform_default_args(
            "data-platform",
            retries=2,
            retry_delay=timedelta(seconds=20),
            execution_timeout=timedelta(minutes=5),
        ),
        tags=["schema-watch", names.name, "alerts"],
        doc_md=__doc__.replace("<source>", names.name),
    )
    def watch():
        @task
        def check_schema(dag_run=None) -> dict:
            from retail_airflow.links import run_url

            from retail_platform.schema_watch.watch import run_watch

            return run_watch(SETTINGS, names.name, run_url=run_url(dag_run))

        @task
        def notify_owners(report: dict) -> dict:
            from retail_platform.schema_watch.notify import notify_changes

            sent = notify_changes(report, SETTINGS)  # records each table's message once delivered
            return {"announced": len(sent), "paused": sorted(report["paused"]), "resumed": report["resumed"]}

        notify_owners(check_schema())

    return watch()


for _names in source_names(SETTINGS.contracts_dir):
    watch_dag(_names)
