"""Spike detection scored against the generator's injected spikes, and the cost of one full cycle.

    ./platform python benchmarks/score_spikes.py [--preset prod] [--scale 1.0] [--seed 42]

Works in its own state folder (.state/bench-spikes: its own MariaDB, lake and warehouse):
generates the preset with its ground truth, extracts every table into the lake (the initial
load), builds every dbt model and test, then scores `analytics.fct_demand_spikes` against the
injected spikes' rising hours (precision and recall at an hourly grain).
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="prod")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--state-dir", default=str(ROOT / ".state" / "bench-spikes"))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    state = Path(args.state_dir).resolve()
    os.environ.update(
        RETAIL_STATE_DIR=str(state),
        RETAIL_LAKE_URI=str(state / "lake"),
        RETAIL_DUCKDB_PATH=str(state / "warehouse" / "retail.duckdb"),
    )
    for name in [n for n in os.environ if n.startswith("AIRFLOW_CONN_CLASSICMODELS")]:
        del os.environ[name]  # always the benchmark's own private source

    import pyarrow.parquet as pq

    from retail_platform.evaluation.spikes import score
    from retail_platform.extract.runner import plan_run, run_local
    from retail_platform.sandbox.seed import seed_source
    from retail_platform.settings import Settings
    from retail_platform.warehouse.snapshots import read_only
    from retail_platform.warehouse.transform import build_and_publish

    settings = Settings.from_env()
    timings = {}
    started = time.perf_counter()
    summary = seed_source(
        preset=args.preset, scale=args.scale, seed=args.seed, replace=True, settings=settings
    )
    timings["generate_s"], timings["load_s"] = summary["generate_s"], summary["load_s"]
    print(f"source: {summary['row_counts']}", file=sys.stderr)

    import shutil

    shutil.rmtree(state / "lake", ignore_errors=True)
    (state / "warehouse" / "retail.duckdb").unlink(missing_ok=True)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    started = time.perf_counter()
    for plan in plan_run(settings, end - timedelta(hours=1), end):
        manifest_rows = run_local(settings, plan)["rows"]
        print(f"extracted {plan['table']}: {manifest_rows:,} rows", file=sys.stderr)
    timings["extract_s"] = time.perf_counter() - started
    started = time.perf_counter()
    build_and_publish(settings)
    timings["dbt_build_s"] = time.perf_counter() - started

    truth = pq.read_table(settings.ground_truth_dir / "classicmodels" / "spike_hours.parquet").to_pylist()
    truth_hours = [(r["productCode"], r["country"], r["hour"]) for r in truth if r["phase"] == "rise"]
    with read_only(settings) as conn:  # the published build
        detected = conn.execute(
            "select product_code, country, spike_start, last_rising_hour from analytics.fct_demand_spikes"
        ).fetchall()
        lines = conn.execute("select count(*) from analytics.fct_order_lines").fetchone()[0]
    result = score(truth_hours, detected) | {
        "preset": args.preset,
        "scale": args.scale,
        "seed": args.seed,
        "order_lines": lines,
        "timings": timings,
    }
    print(json.dumps(result, indent=2, default=str))
    print(
        f"\n| preset | order lines | injected spikes | detected spikes | precision | recall |\n|---|---:|---:|---:|---:|---:|\n"
        f"| {args.preset} x{args.scale:g} | {lines:,} | {result['truth_spikes']} | {result['detected_spikes']} | "
        f"{result['precision']:.3f} | {result['recall']:.3f} |"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
