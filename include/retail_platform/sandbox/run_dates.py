"""The logical date `./platform run` gives the extraction DAG, so that it reads up to now.

The extraction DAG's timetable (``CronDataIntervalTimetable``) gives a manual run the last
*complete* interval before its logical date: a run at 00:45 reads 23:00-00:00 and misses the
current hour, where the sandbox's spike is rising. Given a logical date just past the end of the
interval that holds now, the run's interval is that one (00:00-01:00 at 00:45); the extraction
reads an interval that has not ended only up to the source's clock (``extract/bounds.py``), and a
later run of the same interval (the scheduled one under `./platform up`) reruns its batch up to its
own now, as any rerun does. The DAG and its schedule are unchanged.

The date is one second past the boundary, never on it: a scheduled run's logical date is its
interval's start, unique for the DAG in Airflow's metadata, so a manual run on a boundary would
take the place of the scheduled run of the next interval.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from croniter import croniter

from retail_platform.settings import Settings


def logical_date_reading_to_now(schedule: str, now: datetime | None = None) -> datetime:
    """A logical date (UTC) whose manual data interval under the cron ``schedule`` is the
    scheduled interval that holds ``now`` (default: the clock)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    boundary = croniter(schedule, now.replace(tzinfo=None)).get_next(datetime)
    return boundary.replace(tzinfo=UTC) + timedelta(seconds=1)


def dags_test_dates(settings: Settings, dag_id: str) -> list[str]:
    """The logical date argument of `airflow dags test` for ``dag_id``: an extraction DAG reads up
    to now (``logical_date_reading_to_now``); any other DAG takes its own start (no argument)."""
    from retail_platform.sources import source_names

    if dag_id not in {names.extract_dag_id for names in source_names(settings.contracts_dir)}:
        return []
    return [logical_date_reading_to_now(settings.extract_schedule).isoformat()]
