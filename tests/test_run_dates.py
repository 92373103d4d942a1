"""`./platform run` extracts up to now: the logical date it gives the extraction DAG, read by Airflow's
own timetable, gives the scheduled interval that holds now and never a scheduled run's date."""

from __future__ import annotations

from datetime import UTC, datetime

import pendulum
import pytest

from retail_platform.sandbox.run_dates import logical_date_reading_to_now


@pytest.mark.parametrize(
    ("schedule", "now", "interval"),
    [
        ("0 * * * *", "2026-12-07T00:45:12", ("2026-12-07T00:00:00", "2026-12-07T01:00:00")),
        ("0 * * * *", "2026-12-07T01:00:00", ("2026-12-07T01:00:00", "2026-12-07T02:00:00")),
        ("*/10 * * * *", "2026-12-07T23:59:59", ("2026-12-07T23:50:00", "2026-12-08T00:00:00")),
    ],
)
def test_the_runs_extraction_interval_holds_now(schedule, now, interval):
    from airflow.sdk import CronDataIntervalTimetable
    from airflow.serialization.encoders import coerce_to_core_timetable

    now = datetime.fromisoformat(now).replace(tzinfo=UTC)
    logical = logical_date_reading_to_now(schedule, now)
    # The extraction DAG's timetable, as `airflow dags test` reads it (``DAG.test``).
    timetable = coerce_to_core_timetable(CronDataIntervalTimetable(schedule, timezone="UTC"))
    got = timetable.infer_manual_data_interval(run_after=pendulum.instance(logical))
    assert (got.start, got.end) == tuple(datetime.fromisoformat(t).replace(tzinfo=UTC) for t in interval)
    assert got.start <= now < got.end
    # Not a scheduled run's logical date (its interval's start): both may live in one metadata database.
    assert timetable._align_to_prev(pendulum.instance(logical)) != logical
