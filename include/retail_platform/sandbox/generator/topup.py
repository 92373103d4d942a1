"""Bring a stale generated source to the present without touching what it holds.

A source seeded with a calendar that ended then (``generate(..., ends_at=...)``) ages: a day later
its newest order is a day old, and the dashboard's hourly charts are empty again. Rewriting its
history would be unrealistic (the extractor has already read it: a replica only ever appends and
updates), so the top-up plays the store through the hours it missed, as the live store does:

* orders at the store's recent rate and size (its last 7 days of data: orders an hour, lines an
  order), spread over the hours of the day as the generator spreads them (``HOUR_WEIGHTS``), each
  stamped with its own time, with its lines and a rating for each newly bought pair; ``updated_at`` follows the stamped time, so every new row
  lies after the source's last write and the extraction's watermarks pick it up;
* a demand spike rising through the last hours up to now (one product from one country, 2, 4, 6, 8
  orders an hour at the least), written to the ground truth (``live_spikes.jsonl``) like the live
  store's spikes.

Existing rows are never changed: no order is shipped, no row rewritten. A gap longer than
``MAX_GAP`` is filled only over its last ``MAX_GAP`` (the store looks closed before it).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from retail_platform.sandbox.generator.build import HOUR_WEIGHTS
from retail_platform.sandbox.generator.calendar import naive_utc_seconds
from retail_platform.sandbox.generator.live import (
    LIVE_SPIKES_FILE,
    LiveSpike,
    LiveSpikes,
    LiveStats,
    LiveStore,
)
from retail_platform.source.connection import MySQLConnectionInfo, connect

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(hours=1)  # a source whose last write is older is brought to the present
MAX_GAP = timedelta(days=30)  # the longest stretch a top-up fills (the dashboard's widest range)
RATE_WINDOW = timedelta(days=7)  # the recent data the store's order rate is measured on
SPIKE_HOURS = 4  # a top-up's spike rises through at most this many hours, the last one now


@dataclass
class TopUp:
    """What a top-up found and did (``orders`` includes the spike's)."""

    newest_write: datetime | None  # the source's last write before (naive UTC)
    now: datetime
    orders: int = 0
    lines: int = 0
    ratings: int = 0
    orders_per_hour: float = 0.0  # the store's recent rate the orders were drawn at
    spike: LiveSpike | None = None
    skipped: str | None = None  # why nothing was written
    filled_from: datetime | None = None  # later than newest_write when the gap exceeded MAX_GAP

    def describe(self) -> str:
        """What happened, in a few lines (`./platform run` prints it)."""
        if self.skipped:
            return self.skipped
        lines = [
            f"the source's last write was {self.newest_write:%Y-%m-%d %H:%M:%S} UTC: topped up to "
            f"{self.now:%Y-%m-%d %H:%M:%S} UTC, every row it held kept as it was",
            f"  {self.orders:,} orders, {self.lines:,} order lines, {self.ratings:,} ratings "
            f"(the store's recent {self.orders_per_hour:.2f} orders an hour, plus the spike's)",
        ]
        if self.filled_from != self.newest_write:
            lines.append(
                f"  filled from {self.filled_from:%Y-%m-%d %H:%M} only (at most {MAX_GAP.days} days)"
            )
        if self.spike is not None:
            lines.append(
                f"  a spike rising now: {self.spike.product_code} in {self.spike.country}, "
                f"{', '.join(map(str, self.spike.orders_per_hour))} orders an hour from "
                f"{self.spike.start_hour:%H:%M} UTC (ground truth: {LIVE_SPIKES_FILE})"
            )
        return "\n".join(lines)


def newest_write(admin: MySQLConnectionInfo) -> datetime | None:
    """The latest time any row says it was written (``orderTimestamp``, every ``updated_at``), naive
    UTC; None on a source without them (the original variant: its dates are kept)."""
    conn = connect(admin)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND column_name IN ('orderTimestamp', 'updated_at')",
                (admin.database,),
            )
            columns = sorted(cur.fetchall())
            if ("orders", "orderTimestamp") not in columns:
                return None
            newest = []
            for table, column in columns:
                cur.execute(f"SELECT MAX(`{column}`) FROM `{table}`")
                newest.append(cur.fetchone()[0])
        return max((v for v in newest if v is not None), default=None)
    finally:
        conn.close()


def top_up(
    admin: MySQLConnectionInfo,
    *,
    now: datetime | None = None,
    truth_dir: Path | None = None,
    seed: int | None = None,
    stale_after: timedelta = STALE_AFTER,
) -> TopUp:
    """Fill the source from its last write to ``now`` (default: the clock) when that is older than
    ``stale_after``; see the module's docstring."""
    now = naive_utc_seconds(now or datetime.now(UTC))
    newest = newest_write(admin)
    result = TopUp(newest_write=newest, now=now)
    if newest is None:
        result.skipped = "the source has no orderTimestamp (the original variant): its dates are kept"
        return result
    newest = newest.replace(microsecond=0) + timedelta(seconds=1)  # new rows come strictly after
    if now - newest < stale_after:
        result.skipped = (
            f"the source is current (last write {result.newest_write:%Y-%m-%d %H:%M:%S} UTC, "
            f"less than {stale_after} ago)"
        )
        return result
    start = max(newest, now - MAX_GAP)
    result.filled_from = result.newest_write if start == newest else start
    store = LiveStore(admin, seed=seed, truth_dir=truth_dir, clock=lambda: now)
    try:
        result.orders_per_hour, lines_per_order = _recent_shape(store, newest)
        store.max_lines = max(1, round(2 * lines_per_order - 1))  # 1..max lines: the same mean
        base_times = _order_times(store.rng, start, now, result.orders_per_hour)
        spikes = LiveSpikes(
            store,
            every=MAX_GAP,
            rate_per_s=result.orders_per_hour / 3600,
            rise_hours=_spike_hours(start, now),
            truth_file=None if truth_dir is None else truth_dir / LIVE_SPIKES_FILE,
            id_prefix="topup",
        )
        result.spike = spikes.start(_spike_start(start, now)) if spikes.countries else None
        spike_orders = [] if result.spike is None else _spike_orders(store, result.spike, start, now)
        stats = LiveStats()
        for when, (n_base, spiked) in _ticks(base_times, spike_orders).items():
            store.tick(n_base, 0, stats, spiked, now=when)
    finally:
        store.close()
    result.orders, result.lines, result.ratings = (
        stats.orders_inserted,
        stats.lines_inserted,
        stats.ratings_inserted,
    )
    log.debug("%s", result.describe())
    return result


def _recent_shape(store: LiveStore, newest: datetime) -> tuple[float, float]:
    """Orders an hour, and lines an order, over the source's last ``RATE_WINDOW`` of orders."""
    with store.conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(DISTINCT o.orderNumber), COUNT(d.orderNumber) FROM orders o "
            "LEFT JOIN orderdetails d USING (orderNumber) WHERE o.orderTimestamp >= %s AND o.orderTimestamp < %s",
            (newest - RATE_WINDOW, newest),
        )
        orders, lines = cur.fetchone()
    store.conn.commit()
    return orders / (RATE_WINDOW / timedelta(hours=1)), lines / orders if orders else store.mean_lines


def _order_times(rng: np.random.Generator, start: datetime, end: datetime, per_hour: float) -> list[datetime]:
    """Poisson orders in each clock hour of [start, end], shaped by the hour of the day."""
    weights = HOUR_WEIGHTS * 24 / HOUR_WEIGHTS.sum()  # mean 1
    times = []
    hour = start.replace(minute=0, second=0)
    while hour < end:
        lo, hi = max(hour, start), min(hour + timedelta(hours=1), end)
        span_s = (hi - lo).total_seconds()
        n = int(rng.poisson(per_hour * weights[hour.hour] * span_s / 3600))
        times += [lo + timedelta(seconds=int(s)) for s in rng.uniform(0, span_s, size=n)]
        hour += timedelta(hours=1)
    return times


def _spike_start(start: datetime, now: datetime) -> datetime:
    """The spike's first hour: ``SPIKE_HOURS`` before the current one, or the gap's first hour."""
    current = now.replace(minute=0, second=0)
    return max(current - timedelta(hours=SPIKE_HOURS - 1), start)


def _spike_hours(start: datetime, now: datetime) -> int:
    first = _spike_start(start, now).replace(minute=0, second=0)
    return int((now.replace(minute=0, second=0) - first) / timedelta(hours=1)) + 1


def _spike_orders(
    store: LiveStore, spike: LiveSpike, start: datetime, now: datetime
) -> list[tuple[datetime, tuple[int, int]]]:
    """The spike's orders, each hour's spread over the part of that hour in [start, now]."""
    buyers = store.customers[store.countries == spike.country]
    product = store.products.index(spike.product_code)
    orders = []
    for k, count in enumerate(spike.orders_per_hour):
        hour = spike.start_hour + timedelta(hours=k)
        lo, hi = max(hour, start), min(hour + timedelta(hours=1), now)
        offsets = store.rng.uniform(0, max((hi - lo).total_seconds(), 1), size=count)
        customers = store.rng.choice(buyers, size=count)
        orders += [
            (min(lo + timedelta(seconds=int(s)), now), (int(c), product))
            for s, c in zip(offsets, customers, strict=True)
        ]
    return orders


def _ticks(
    base_times: list[datetime], spike_orders: list[tuple[datetime, tuple[int, int]]]
) -> dict[datetime, tuple[int, list[tuple[int, int]]]]:
    """Orders grouped by their second, in time order: (ordinary orders, spike orders)."""
    base = Counter(base_times)
    spiked: dict[datetime, list[tuple[int, int]]] = {}
    for when, order in spike_orders:
        spiked.setdefault(when, []).append(order)
    return {when: (base.get(when, 0), spiked.get(when, [])) for when in sorted(set(base) | set(spiked))}
