"""Spike start → alert delivered → visible on the dashboard, on the platform's own code path.

    ./platform python benchmarks/spike_latency.py [--hours 2] [--interval-min 10] [--real-seconds 20]

Works in its own state folder (.state/bench-spike-latency: its own MariaDB, lake and warehouse). The
default source (the classic preset, its calendar ending `--hours` before now) gets a live store with
`--spike-every` behaviour (retail live): a spike starts at once and rises hour by hour. The store's
clock is simulated (the hours play in `--real-seconds`), then the extraction cycles of the live
platform are replayed at `--interval-min` of the store's clock: each one extracts its interval,
builds and publishes the warehouse and announces spikes (the transform DAG's steps), and checks
whether the spike is in the alerts and rising in the published marts that Superset reads.

Reported, per run: when the spike became detectable (the rule needs two rising hours: the start of
its second clock hour), the first cycle that alerted and showed it, "spike start → alert" and
"→ visible" in the store's clock (the extraction interval's share) plus the measured seconds of the
cycle itself (extract, build, announce). Against a running `./platform up --live` (the real
scheduler, wall-clock spikes) the same figures are measured by `benchmarks/freshness.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def seed_and_play(args, start: datetime, now: datetime) -> tuple[dict, datetime]:
    """The default source ending at ``start``, then the live store from ``start`` to ``now``."""
    from retail_platform.sandbox.generator.build import generate
    from retail_platform.sandbox.generator.live import SimulatedClock, read_live_spikes, run_live
    from retail_platform.sandbox.generator.load import load_source, write_ground_truth
    from retail_platform.sandbox.generator.presets import get_preset
    from retail_platform.sandbox.seed import sandbox_source
    from retail_platform.settings import Settings

    settings = Settings.from_env()
    _, admin = sandbox_source(settings)
    source = generate(get_preset("classic"), seed=42, ends_at=start)
    load_source(source, admin, replace=True)
    truth_dir = settings.state_dir / "truth"
    (truth_dir / "live_spikes.jsonl").unlink(missing_ok=True)
    write_ground_truth(source, truth_dir)
    clock = SimulatedClock(start, speed=(now - start).total_seconds() / args.real_seconds)
    stats = run_live(
        admin, rate_per_s=args.rate, duration_s=args.real_seconds, tick_s=0.5, seed=args.seed,
        truth_dir=truth_dir, spike_every=timedelta(days=1), clock=clock,
    )  # fmt: skip
    (spike,) = read_live_spikes(truth_dir)
    return spike, stats.last_order_timestamp + timedelta(seconds=1)


def cycle(settings, start: datetime, end: datetime, spike: dict) -> dict:
    """One extraction interval, build, publish and announcement, as the DAGs run them."""
    from retail_platform.dashboard.spike_alerts import announce_spikes
    from retail_platform.extract.runner import plan_run, run_local
    from retail_platform.warehouse.snapshots import read_only
    from retail_platform.warehouse.transform import build_and_publish

    began = time.perf_counter()
    for plan in plan_run(settings, "classicmodels", start.replace(tzinfo=UTC), end.replace(tzinfo=UTC)):
        run_local(settings, plan)
    extracted = time.perf_counter()
    build_and_publish(settings)
    built = time.perf_counter()
    announce_spikes(settings, now=end.replace(tzinfo=UTC))
    announced = time.perf_counter()
    alerts = settings.alerts_file.read_text().splitlines() if settings.alerts_file.exists() else []
    alerted = any(
        a["kind"] == "demand_spike"
        and (a["details"]["product_code"], a["details"]["country"])
        == (spike["product_code"], spike["country"])
        for a in map(json.loads, alerts)
    )
    with read_only(settings) as conn:
        (visible,) = conn.execute(
            "select count(*) > 0 from analytics.fct_demand_spikes where is_rising and product_code = ? "
            "and country = ?",
            [spike["product_code"], spike["country"]],
        ).fetchone()
    return {
        "clock_end": end,
        "extract_s": extracted - began,
        "build_s": built - extracted,
        "announce_s": announced - built,
        "alerted": alerted,
        "visible": bool(visible),
    }


def run(args) -> dict:
    from retail_platform.settings import Settings

    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None) - timedelta(minutes=5)
    start = now.replace(minute=0, second=0) - timedelta(hours=args.hours) + timedelta(minutes=1)
    spike, played_to = seed_and_play(args, start, now)
    settings = Settings.from_env()
    began = datetime.fromisoformat(spike["started_at"])
    detectable = datetime.fromisoformat(spike["start_hour"]) + timedelta(hours=1)
    interval = timedelta(minutes=args.interval_min)
    cycles, previous, end = [], start - timedelta(hours=1), start + interval
    while True:
        end = min(end, played_to)
        result = cycle(settings, previous, end, spike)
        cycles.append(result)
        print(json.dumps(result, default=str), file=sys.stderr)
        if (result["alerted"] and result["visible"]) or end >= played_to:
            break
        previous, end = end, end + interval
    seen = next((c for c in cycles if c["alerted"] and c["visible"]), None)
    cycle_s = None if seen is None else seen["extract_s"] + seen["build_s"] + seen["announce_s"]
    return {
        "spike": spike,
        "interval_min": args.interval_min,
        "detectable_after_min": (detectable - began) / timedelta(minutes=1),
        "alert_after_clock_min": None if seen is None else (seen["clock_end"] - began) / timedelta(minutes=1),
        "cycle_s": cycle_s,
        "cycles": len(cycles),
        "delivered": seen is not None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=int, default=2, help="clock hours the live store plays")
    parser.add_argument("--interval-min", type=float, default=10, help="extraction interval (store's clock)")
    parser.add_argument("--real-seconds", type=float, default=20, help="wall seconds the hours play in")
    parser.add_argument("--rate", type=float, default=1.0, help="live orders a second (wall clock)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--state-dir", default=str(ROOT / ".state" / "bench-spike-latency"))
    args = parser.parse_args()
    state = Path(args.state_dir).resolve()
    os.environ.update(
        RETAIL_STATE_DIR=str(state),
        RETAIL_LAKE_URI=str(state / "lake"),
        RETAIL_DUCKDB_PATH=str(state / "warehouse" / "retail.duckdb"),
        RETAIL_ALERTS_FILE=str(state / "alerts.jsonl"),
    )
    for name in [n for n in os.environ if n.startswith(("AIRFLOW_CONN_CLASSICMODELS", "AIRFLOW_CONN_SLACK"))]:
        del os.environ[name]  # the benchmark's own private source; alerts to its own file
    for path in ("lake", "warehouse", "alerts.jsonl"):
        target = state / path
        if target.is_dir():
            import shutil

            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    result = run(args)
    print(json.dumps(result, indent=2, default=str))
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    print(
        "\n| extraction interval (clock min) | detectable after (min) | spike start → alert and dashboard "
        "(clock min) | + one cycle: extract, build, announce (s) | cycles |\n|---:|---:|---:|---:|---:|"
    )
    print(
        f"| {args.interval_min:g} | {result['detectable_after_min']:.0f} | "
        f"{fmt(result['alert_after_clock_min'], '.0f')} | {fmt(result['cycle_s'], '.1f')} | {result['cycles']} |"
    )
    return 0 if result["delivered"] else 1


if __name__ == "__main__":
    sys.exit(main())
