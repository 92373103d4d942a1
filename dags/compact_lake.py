"""
### compact_lake

Merges each table's committed batches in the lake into one compacted batch, and removes the files
compaction superseded once their grace period is over. At the recommended `*/10` extraction
schedule a table gains 144 batches a day; compaction keeps the warehouse's sources reading a few
files instead of thousands.

* **Schedule:** `RETAIL_COMPACTION_SCHEDULE` (cron, default daily at 03:30 UTC).
* **Tasks:** `plan_compaction` lists every table of every source contract; `compact_table` is mapped
  per table: it merges the table's visible batches (the latest version of each key for
  incremental tables, every row for append-only ones, the newest snapshot for full ones), switches
  the table's index in one step as a commit does (readers see the old set of files or the new
  one), then removes superseded files older than `RETAIL_COMPACTION_GRACE_HOURS`.
* **Safe** with extraction running at the same time (the index switch is a compare-and-swap; a
  batch rewritten during the merge makes it merge again), and against a kill at any point.
* **Owner:** data-platform.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task
from retail_airflow.dag_defaults import platform_default_args

from retail_platform.lake.settings import LakeSettings

SETTINGS = LakeSettings.from_env()  # environment only: no database or Variable at parse time


@dag(
    dag_id="compact_lake",
    schedule=CronTriggerTimetable(SETTINGS.compaction_schedule, timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=platform_default_args("data-platform", execution_timeout=timedelta(minutes=60)),
    tags=["lake", "compaction"],
    doc_md=__doc__,
)
def compact_lake():
    @task
    def plan_compaction() -> list[dict]:
        from retail_platform.sources import source_names

        return [
            {"source": names.name, "table": table}
            for names in source_names(SETTINGS.platform.contracts_dir)
            for table in sorted(names.load_contract().tables)
        ]

    @task(map_index_template="{{ source_table }}")
    def compact_table(item: dict) -> dict:
        from retail_platform.lake.compaction import compact_source
        from retail_platform.sources import names_for

        get_current_context()["source_table"] = f"{item['source']}.{item['table']}"
        contract = names_for(SETTINGS.platform, item["source"]).load_contract()
        (result,) = compact_source(SETTINGS, contract, tables=[item["table"]])
        return result.to_dict()

    compact_table.expand(item=plan_compaction())


compact_lake()
