"""Which interval an extraction run reads.

A scheduled run reads its data interval. A manual run whose conf asks ``{"read_to_now": true}``
(`./platform run` does) reads the scheduled interval that holds now instead: the timetable gives a
manual run the last *complete* interval, which misses the current hour where the sandbox's spike is
rising. An interval that has not ended is read only up to the source's clock (``bounds.py``), and
the scheduled run of the same interval later reruns its batch up to its own now, as any rerun does.
The run keeps its real logical date and start, so the UI shows when it ran and for how long.
"""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter

READ_TO_NOW = "read_to_now"  # the manual run's conf key


def interval_holding(schedule: str, now: datetime) -> tuple[datetime, datetime]:
    """The interval of the cron ``schedule`` (UTC) that holds ``now``: [start, end)."""
    naive = now.astimezone(UTC).replace(tzinfo=None)
    end = croniter(schedule, naive).get_next(datetime)
    start = croniter(schedule, end).get_prev(datetime)
    return start.replace(tzinfo=UTC), end.replace(tzinfo=UTC)


def interval_to_read(
    schedule: str, start: datetime, end: datetime, conf: dict | None, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The run's data interval, or the one holding ``now`` when its conf asks to read to now."""
    if not (conf or {}).get(READ_TO_NOW):
        return start, end
    return interval_holding(schedule, now or datetime.now(UTC))
