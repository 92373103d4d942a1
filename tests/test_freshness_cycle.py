"""The platform on a short extraction schedule, as `./platform up --live` runs it (supervisord, the
real scheduler, Airflow's metadata in PostgreSQL): cycles publish the live orders, the data's age
measured independently (the source's orders against the published marts) stays within what the
cycles explain, and a demand spike injected on the source is announced exactly once, however many
builds follow.

One `up` (small preset, `RETAIL_EXTRACT_SCHEDULE='* * * * *'`) serves both tests. The spike rule
reads whole clock hours (two rising hours): the live generator's own spike code places the spike's
first hour in the previous clock hour and its second hour now, just before `up`, so the first
cycles carry it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

SCHEDULE = "* * * * *"
POLL_S = 5.0
MIN_SCHEDULED = 3  # extractions on the schedule before the test judges it
LAST_START_MINUTE = 50  # later in the hour, the spike would stop rising before the first cycles
EXTRACT_DAG = "extract_classicmodels"
TRANSFORM_DAG = "transform_warehouse"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SettableClock:
    """The live store's clock, set by the test (the spike's first hour in the previous clock hour)."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Observed:
    """What the test saw while the platform ran."""

    spike: dict
    first_live_order: int
    ages: list[tuple[datetime, float]] = field(default_factory=list)  # (when, independent age s)
    alerts: list[dict] = field(default_factory=list)
    extract_runs: list[tuple] = field(default_factory=list)  # (run_type, state, start, end)
    # Each published build: (marts published at, the data interval end of the extraction it built on).
    published: list[tuple[datetime, datetime]] = field(default_factory=list)
    transform_states: list[str] = field(default_factory=list)
    spike_alerted_at: datetime | None = None
    spike_shown_rising_at: datetime | None = None  # counted by the "Spikes rising now" chart
    transforms_after_alert: int = 0

    def ages_after_second_build(self) -> list[tuple[datetime, float, datetime]]:
        """(when, age, the interval end of the build before the one readers saw then): every order
        placed before that was visible. (The last build's own interval can miss an order placed in
        it and updated between the interval's end and the extraction's read: the next batch has it.)"""
        rows = []
        for when, age in self.ages:
            before = [interval_end for published, interval_end in self.published if published <= when]
            if len(before) >= 2:
                rows.append((when, age, before[-2]))
        return rows

    def scheduled_extractions(self) -> list[tuple]:
        return [r for r in self.extract_runs if r[0] == "scheduled"]

    def spike_alerts(self) -> list[dict]:
        key = (self.spike["product_code"], self.spike["country"])
        return [
            a
            for a in self.alerts
            if a["kind"] == "demand_spike" and (a["details"]["product_code"], a["details"]["country"]) == key
        ]


def _env(state: Path) -> dict[str, str]:
    from conftest import up_env

    return up_env(state, RETAIL_EXTRACT_SCHEDULE=SCHEDULE)


def _independent_age_s(source_conn, settings, first_live: int, now: datetime) -> float | None:
    """The source says which live orders exist and when they were placed; the published marts which
    of them readers see: complete up to the earliest one not shown (or the newest, when all are)."""
    from retail_platform.warehouse.snapshots import NoPublishedWarehouse, read_only

    with source_conn.cursor() as cur:
        cur.execute("SELECT orderNumber, orderTimestamp FROM orders WHERE orderNumber > %s", (first_live,))
        placed = {n: ts.replace(tzinfo=UTC) for n, ts in cur.fetchall()}
    try:
        with read_only(settings) as mart:
            rows = mart.execute(
                "select order_number from analytics.fct_orders where order_number > ?", [first_live]
            )
            shown = {n for (n,) in rows.fetchall()}
    except NoPublishedWarehouse:
        return None
    if not placed or not shown:
        return None  # no build with live orders yet
    missing = [ts for n, ts in placed.items() if n not in shown]
    return max(0.0, (now - (min(missing) if missing else max(placed.values()))).total_seconds())


CHART_DATASET = Path(__file__).resolve().parents[1] / "include/superset/bundle/datasets/retail_warehouse"


@functools.cache
def _rising_now_query() -> str:
    """The "Spikes rising now" chart's own metric (its dataset's SQL expression, as Superset runs
    it), for one product and country; read once from the Superset bundle."""
    import yaml

    dataset = yaml.safe_load((CHART_DATASET / "fct_demand_spikes.yaml").read_text())
    (metric,) = [m["expression"] for m in dataset["metrics"] if m["metric_name"] == "rising_spikes"]
    table = f"{dataset['schema']}.{dataset['table_name']}"
    return f"select {metric} from {table} where product_code = ? and country = ?"


def _rising_now_count(settings, spike: dict) -> int:
    """The dashboard's "Spikes rising now" for the spike's product and country, on the published marts."""
    from retail_platform.warehouse.snapshots import NoPublishedWarehouse, read_only

    try:
        with read_only(settings) as mart:
            row = mart.execute(_rising_now_query(), [spike["product_code"], spike["country"]]).fetchone()
    except NoPublishedWarehouse:
        return 0
    return int(row[0])


def _metadata(state: Path, observed: Observed) -> None:
    import psycopg

    from retail_platform.sandbox.postgres import LocalPostgres

    url = LocalPostgres(state / "postgres").database_url("airflow", driver="postgresql")
    with psycopg.connect(url) as conn:
        observed.extract_runs = conn.execute(
            "select run_type, state, start_date, end_date, data_interval_end from dag_run where dag_id = %s "
            "order by start_date",
            (EXTRACT_DAG,),
        ).fetchall()
        transforms = conn.execute(
            "select r.state, r.queued_at, r.start_date, t.end_date from dag_run r left join task_instance t "
            "on t.dag_id = r.dag_id and t.run_id = r.run_id and t.task_id = 'publish_warehouse' "
            "where r.dag_id = %s order by r.queued_at",
            (TRANSFORM_DAG,),
        ).fetchall()
    observed.transform_states = [t[0] for t in transforms]
    ended = [e for e in observed.extract_runs if e[1] == "success"]
    published_builds = []
    for state_, queued, _, published in transforms:
        # The extraction that triggered it: the latest one ended by the transform run's creation.
        triggering = [e for e in ended if e[3] <= queued + timedelta(seconds=5)]
        if state_ == "success" and published and triggering:
            published_builds.append((published, triggering[-1][4]))
    observed.published = sorted(published_builds)
    if observed.spike_alerted_at is not None:
        observed.transforms_after_alert = sum(
            1 for t in transforms if t[0] == "success" and t[2] and t[2] > observed.spike_alerted_at
        )


@pytest.fixture(scope="module")
def short_schedule_platform(state_dir):
    from retail_platform.sandbox import launcher
    from retail_platform.sandbox.generator.live import LIVE_SPIKES_FILE, LiveSpikes, LiveStats, LiveStore
    from retail_platform.sandbox.seed import sandbox_source, seed_source
    from retail_platform.settings import Settings
    from retail_platform.source.connection import connect

    state = state_dir / "freshness-cycle"
    shutil.rmtree(state, ignore_errors=True)
    # The spike's second hour is this clock hour: "rising now" holds until the next hour's orders
    # are built, so the first cycles must come before it (at most ~10 minutes waited, rarely).
    minute = datetime.now(UTC).minute
    if minute >= LAST_START_MINUTE:
        time.sleep((60 - minute) * 60 - datetime.now(UTC).second + 5)
    env = _env(state)
    retail = [sys.executable, "-m", "retail_platform.cli"]
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n not in env]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        settings = Settings.from_env()
        os.environ.update(launcher.start(only={"mariadb"}))
        seed_source(preset="classic", replace=True, settings=settings, ends_now=True)
        _, admin = sandbox_source(settings)
        truth_dir = settings.ground_truth_dir / admin.database
        # The spike's first hour, an hour ago (in the previous clock hour), through the live store.
        wall = datetime.now(UTC).replace(tzinfo=None)
        clock = SettableClock(wall - timedelta(hours=1))
        store = LiveStore(admin, seed=11, truth_dir=truth_dir, clock=clock)
        spikes = LiveSpikes(
            store, every=timedelta(days=1), rate_per_s=1.0, truth_file=truth_dir / LIVE_SPIKES_FILE
        )
        stats = LiveStats()
        store.tick(0, 0, stats, spikes.due_orders(clock(), stats), now=clock())
        (spike,) = [s.truth() for s in spikes.active]
        # Its second hour, now: from here it is detectable.
        clock.now = max(
            datetime.now(UTC).replace(tzinfo=None),
            datetime.fromisoformat(spike["start_hour"]) + timedelta(hours=1),
        )
        store.tick(0, 0, stats, spikes.due_orders(clock(), stats), now=clock())
        spike_hour = clock().replace(minute=0, second=0, microsecond=0)
        store.close()
        conn = connect(admin, autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SELECT MAX(orderNumber) FROM orders")
            first_live = int(cur.fetchone()[0])
        conn.close()
        observed = Observed(spike=spike, first_live_order=first_live)
        try:
            up = subprocess.run(
                [*retail, "up", "--live", "1", "--spike-every", "0", "--no-dashboard", "--no-serving"],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
            source = connect(admin, autocommit=True)
            deadline = time.monotonic() + 900
            try:
                while time.monotonic() < deadline:
                    time.sleep(POLL_S)
                    now = datetime.now(UTC)
                    hour = now.replace(tzinfo=None, minute=0, second=0, microsecond=0)
                    if hour > spike_hour:
                        # A new clock hour (a slow start): the spike's next hour keeps it rising.
                        clock.now = spike_hour = hour
                        store.conn = connect(admin, autocommit=False)  # `up` restarted the source
                        store.tick(0, 0, stats, spikes.due_orders(clock(), stats), now=clock())
                        store.close()
                    age = _independent_age_s(source, settings, first_live, now)
                    if age is not None:
                        observed.ages.append((now, age))
                    if settings.alerts_file.exists():
                        observed.alerts = [
                            json.loads(x) for x in settings.alerts_file.read_text().splitlines() if x
                        ]
                    if observed.spike_alerted_at is None and observed.spike_alerts():
                        observed.spike_alerted_at = now
                    if observed.spike_shown_rising_at is None and _rising_now_count(settings, spike):
                        observed.spike_shown_rising_at = now
                    _metadata(state, observed)
                    # A build after the announcement (it would announce again if it could), ages
                    # sampled while the second build with live orders was the published one, and
                    # the scheduled extractions the first test counts (the others can come first).
                    if (
                        observed.transforms_after_alert >= 1
                        and observed.spike_shown_rising_at is not None
                        and observed.ages_after_second_build()
                        and len(observed.scheduled_extractions()) >= MIN_SCHEDULED
                    ):
                        break
            finally:
                source.close()
            yield observed
        finally:
            subprocess.run([*retail, "down"], env=env, capture_output=True, text=True, timeout=300)


def test_a_one_minute_schedule_publishes_and_the_data_age_stays_within_its_cycles(short_schedule_platform):
    seen = short_schedule_platform
    scheduled = seen.scheduled_extractions()
    assert len(scheduled) >= MIN_SCHEDULED, f"the extraction did not run on {SCHEDULE!r}: {seen.extract_runs}"
    assert all(r[1] != "failed" for r in seen.extract_runs), seen.extract_runs
    assert "failed" not in seen.transform_states, seen.transform_states
    judged = seen.ages_after_second_build()
    assert judged, f"fewer than two builds with live orders published: {seen.published}"
    # Independent age at t <= t - the data interval end of the build before the one published at t:
    # the interval plus one cycle, plus one more interval for an order updated as it was read.
    # (The source's and the sampler's clocks are one machine's: the slack is the tick, 1 s.)
    late = [(when, age, end) for when, age, end in judged if age > (when - end).total_seconds() + 1]
    assert late == [], (late, seen.published)


def test_a_spike_injected_while_the_platform_runs_is_announced_exactly_once(short_schedule_platform):
    seen = short_schedule_platform
    alerts = seen.spike_alerts()
    assert len(alerts) == 1, (seen.spike, [a["details"] for a in seen.alerts if a["kind"] == "demand_spike"])
    assert seen.transforms_after_alert >= 1, "no build after the announcement to see a repeat"
    (alert,) = alerts
    assert seen.spike["product_code"] in alert["details"]["dashboard_url"]  # opens on the spike's product
    # and the page counts it rising (the browser test shows that count on the default build)
    assert seen.spike_shown_rising_at is not None, "never counted by the dashboard's 'Spikes rising now'"
    repeated = [a["details"]["spike_id"] for a in seen.alerts if a["kind"] == "demand_spike"]
    assert len(repeated) == len(set(repeated)), repeated  # no spike, injected or not, told twice
