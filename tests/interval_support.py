"""The extraction's data interval for tests: whole clock hours ending at the hour the session began."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# One clock hour for the session: two intervals of one test never straddle an hour's turn.
THIS_HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def hour_interval(hours_ago: int = 0) -> tuple[datetime, datetime]:
    end = THIS_HOUR - timedelta(hours=hours_ago)
    return end - timedelta(hours=1), end
