"""Move a generated store's calendar so that its data ends now.

The generator draws every store in its preset's own calendar (the classic preset: the published
dump's 2003-01-06 to 2005-05-31), so a seed always gives the same store. A sandbox that should look
alive has its calendar shifted afterwards: every hour before the preset's last hour moves by the
same whole number of hours onto the hours before the current one, and the preset's last hour is
squeezed into the current hour up to now. Hourly counts (what the spike rule reads) and the order
of events are kept; nothing lies in the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HOUR_US = 3600 * 10**6
_UNITS = {"s": 10**6, "ms": 10**3, "us": 1, "ns": 1}


def naive_utc_seconds(now: datetime | None = None) -> datetime:
    """``now`` (default: the clock) as naive UTC to the second."""
    now = now or datetime.now(UTC)
    if now.tzinfo is not None:
        now = now.astimezone(UTC).replace(tzinfo=None)
    return now.replace(microsecond=0)


@dataclass(frozen=True)
class CalendarShift:
    """The preset's last hour (its end date, 23:00) lands on the hour of ``ends_at`` (naive UTC)."""

    preset_end: date
    ends_at: datetime

    @property
    def anchor_hour(self) -> datetime:
        return datetime.combine(self.preset_end, time(23))

    @property
    def current_hour(self) -> datetime:
        return self.ends_at.replace(minute=0, second=0, microsecond=0)

    @property
    def hours(self) -> int:
        """Whole hours every timestamp before the last hour moves by."""
        return round((self.current_hour - self.anchor_hour) / timedelta(hours=1))

    @property
    def days(self) -> int:
        """Days a date moves by when no timestamp says better (the end date becomes today)."""
        return (self.current_hour.date() - self.preset_end).days

    def map_us(self, values: np.ndarray) -> np.ndarray:
        """Map microseconds since the epoch (int64) from the preset's calendar to the shifted one."""
        anchor = _epoch_us(self.anchor_hour)
        current = _epoch_us(self.current_hour)
        squeeze = (_epoch_us(self.ends_at) - current) / HOUR_US
        into_last = np.clip(values - anchor, 0, HOUR_US)
        late = (current + into_last * squeeze).astype(np.int64)
        return np.where(values < anchor, values + (current - anchor), late)

    def map_datetime(self, value: datetime) -> datetime:
        (mapped,) = self.map_us(np.array([_epoch_us(value)], dtype=np.int64))
        return datetime(1970, 1, 1) + timedelta(microseconds=int(mapped))

    # ---------------------------------------------------------------- arrow
    def timestamps(self, column: pa.ChunkedArray | pa.Array) -> pa.Array:
        unit = column.type.unit
        scale = _UNITS[unit]
        raw, mask = _values_and_mask(column, pa.int64())
        if unit == "ns":
            mapped = self.map_us(raw // 1000) * 1000 + raw % 1000
        else:
            mapped = self.map_us(raw * scale) // scale
        return pa.array(mapped, pa.int64(), mask=mask).cast(column.type)

    def dates(self, column: pa.ChunkedArray | pa.Array, days: np.ndarray | int) -> pa.Array:
        raw, mask = _values_and_mask(column, pa.int32())
        shifted = (raw + days).astype(np.int32)
        return pa.array(shifted, pa.int32(), mask=mask).cast(pa.date32())

    def table(self, name: str, table: pa.Table) -> pa.Table:
        """Every timestamp mapped; dates moved with their row's timestamp where one says when
        (an order's date is the day of its timestamp), else by whole days."""
        days: np.ndarray | int = self.days
        if name == "orders" and "orderTimestamp" in table.column_names:
            moved = self.timestamps(table.column("orderTimestamp"))
            new_day = pc.cast(pc.cast(moved, pa.date32()), pa.int32()).to_numpy()
            old_day = pc.cast(table.column("orderDate"), pa.int32()).to_numpy()
            days = (new_day - old_day).astype(np.int64)
        for i, field in enumerate(table.schema):
            if pa.types.is_timestamp(field.type):
                table = table.set_column(i, field, self.timestamps(table.column(i)))
            elif pa.types.is_date32(field.type):
                table = table.set_column(i, field, self.dates(table.column(i), days))
        return table

    def describe(self) -> dict:
        return {
            "ends_at": self.ends_at.isoformat(),
            "shifted_by_hours": self.hours,
            "last_hour": f"{self.anchor_hour.isoformat()} squeezed into {self.current_hour.isoformat()} .. "
            f"{self.ends_at.isoformat()}",
        }


def _epoch_us(value: datetime) -> int:
    return (value - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def _values_and_mask(
    column: pa.ChunkedArray | pa.Array, as_type: pa.DataType
) -> tuple[np.ndarray, np.ndarray]:
    raw = pc.cast(column, as_type)
    mask = np.asarray(pc.is_null(raw), dtype=bool)
    return np.asarray(pc.fill_null(raw, 0), dtype=np.int64), mask
