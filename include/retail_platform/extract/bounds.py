"""The cursor range a batch reads, and the watermark it leaves. Shared by both engines.

* ``full``: no range.
* ``incremental``: ``[min(interval start, watermark) - lookback, interval end)`` on the
  timestamp cursor; the first batch ever reads everything before the interval end.
* ``append_only``: ``[watermark + 1 - lookback_keys, max key + 1)`` on the integer key.

A rerun of a committed batch reuses the lower bound in its manifest and, for incremental tables,
reads up to now: rows updated since the first run moved their cursor past the old upper bound,
and a rewrite with the old range would drop them from the lake (reconciliation also refuses a
rewrite that drops keys the source still has). Overlaps between batches are expected (lookback,
reruns) and removed by staging, which keeps the latest version of each primary key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from retail_platform.contract.model import ExtractionMode
from retail_platform.extract.plan import TablePlan


@dataclass(frozen=True)
class Bounds:
    """The cursor range a batch reads: typed values (datetime or int), None for an open end."""

    lower: object = None
    upper: object = None
    reused: bool = False

    def encoded(self) -> dict:
        return {"lower": _encode(self.lower), "upper": _encode(self.upper)}


def parse_instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _decode(value, mode: ExtractionMode):
    if value is None:
        return None
    return int(value) if mode is ExtractionMode.APPEND_ONLY else parse_instant(value)


def _encode(value):
    if value is None or isinstance(value, int):
        return value
    return value.astimezone(UTC).isoformat()


def _reused(plan: TablePlan, manifest: dict, source_now) -> Bounds:
    bounds = manifest["cursor"]
    upper = _decode(bounds.get("upper"), plan.mode)
    if plan.mode is ExtractionMode.INCREMENTAL and source_now is not None:
        upper = max(upper, source_now()) if upper is not None else None
    return Bounds(_decode(bounds.get("lower"), plan.mode), upper, reused=True)


def resolve_bounds(
    plan: TablePlan, *, manifest: dict | None, watermark: dict | None, max_key=None, source_now=None
) -> Bounds:
    """``max_key`` gives the table's current maximum key (append_only); ``source_now`` the source's
    clock in UTC (incremental): an interval that has not ended yet is read only up to now, so rows
    written while the batch is read always belong to a later batch."""
    mode, cursor = plan.mode, plan.cursor
    if mode is ExtractionMode.FULL:
        return Bounds()
    if (
        manifest is not None
        and manifest.get("mode") == mode
        and manifest.get("cursor", {}).get("column") == cursor
    ):
        return _reused(plan, manifest, source_now)
    high = None
    if watermark is not None and watermark.get("cursor") == cursor and watermark.get("mode") == mode:
        high = _decode(watermark.get("high_water"), mode)
    if mode is ExtractionMode.INCREMENTAL:
        start, end = plan.interval_start, plan.interval_end
        lower = None if high is None else min(start, high) - timedelta(minutes=plan.lookback_minutes)
        if source_now is not None:
            end = min(end, source_now())
        return Bounds(lower, end)
    current = max_key() if max_key is not None else None
    upper = None if current is None else int(current) + 1
    lower = None if high is None else max(0, high + 1 - plan.lookback_keys)
    if upper is not None and lower is not None and lower > upper:
        lower = upper
    return Bounds(lower, upper)


def next_watermark(plan: TablePlan, bounds: Bounds, max_cursor_seen, previous: dict | None) -> dict | None:
    """The watermark after a batch: the highest cursor value it committed (never moves back)."""
    if plan.mode is ExtractionMode.FULL:
        return None
    if max_cursor_seen is None:
        return previous
    return {
        "table": plan.table,
        "cursor": plan.cursor,
        "mode": plan.mode.value,
        "high_water": _encode(max_cursor_seen),
        "batch_id": plan.batch_id,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
