"""`./platform run` extracts up to now: a manual run whose conf asks to read to now reads the
scheduled interval that holds now (checked against Airflow's own timetable); any other run reads its
data interval."""

from __future__ import annotations

from datetime import UTC, datetime

import pendulum
import pytest

from retail_platform.extract.intervals import READ_TO_NOW, interval_holding, interval_to_read


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "now", "interval"),
    [
        ("0 * * * *", "2026-12-07T00:45:12", ("2026-12-07T00:00:00", "2026-12-07T01:00:00")),
        ("0 * * * *", "2026-12-07T01:00:00", ("2026-12-07T01:00:00", "2026-12-07T02:00:00")),
        ("*/10 * * * *", "2026-12-07T23:59:59", ("2026-12-07T23:50:00", "2026-12-08T00:00:00")),
    ],
)
def test_a_run_asked_to_read_to_now_reads_the_scheduled_interval_that_holds_now(schedule, now, interval):
    from airflow.sdk import CronDataIntervalTimetable
    from airflow.serialization.encoders import coerce_to_core_timetable

    start, end = interval_to_read(schedule, _at("2020-01-01T00:00"), _at("2020-01-01T01:00"),
                                  {READ_TO_NOW: True}, _at(now))  # fmt: skip
    assert (start, end) == (_at(interval[0]), _at(interval[1]))
    assert start <= _at(now) < end
    # The extraction DAG's timetable: exactly the interval its scheduled run for ``start`` reads.
    timetable = coerce_to_core_timetable(CronDataIntervalTimetable(schedule, timezone="UTC"))
    scheduled = timetable.infer_manual_data_interval(run_after=pendulum.instance(end))
    assert (scheduled.start, scheduled.end) == (start, end)


def test_any_other_run_reads_its_data_interval():
    start, end = _at("2026-12-07T00:00"), _at("2026-12-07T01:00")
    for conf in (None, {}, {READ_TO_NOW: False}, {"other": 1}):
        assert interval_to_read("0 * * * *", start, end, conf, _at("2026-12-07T05:30")) == (start, end)
    assert interval_holding("0 * * * *", _at("2026-12-07T05:30")) == (
        _at("2026-12-07T05:00"),
        _at("2026-12-07T06:00"),
    )
