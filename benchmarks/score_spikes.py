"""Spike detection scored against the generator's injected spikes, and the cost of one full cycle.

    ./platform python benchmarks/score_spikes.py [--preset prod] [--scale 1.0] [--seed 42 --seed 7]

Works in its own state folder (.state/bench-spikes: its own MariaDB, lake and warehouse). For each
seed: generates the preset with its ground truth, extracts every table into the lake (the initial
load), builds and publishes every dbt model and test, then scores `analytics.fct_demand_spikes`
against the injected spikes (retail_platform.evaluation.spikes): injected episodes against detected
episodes, and injected rising hours against detected hours.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_seed(args, seed: int) -> dict:
    import pyarrow.parquet as pq

    from retail_platform.evaluation.spikes import DetectedSpike, injected_from_truth, score
    from retail_platform.extract.runner import plan_run, run_local
    from retail_platform.sandbox.seed import seed_source
    from retail_platform.settings import Settings
    from retail_platform.warehouse.snapshots import read_only
    from retail_platform.warehouse.transform import build_and_publish

    settings = Settings.from_env()
    state = settings.state_dir
    timings = {}
    summary = seed_source(preset=args.preset, scale=args.scale, seed=seed, replace=True, settings=settings)
    timings["generate_s"], timings["load_s"] = summary["generate_s"], summary["load_s"]
    print(f"seed {seed} source: {summary['row_counts']}", file=sys.stderr)
    shutil.rmtree(state / "lake", ignore_errors=True)
    shutil.rmtree(state / "warehouse", ignore_errors=True)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    started = time.perf_counter()
    for plan in plan_run(settings, "classicmodels", end - timedelta(hours=1), end):
        run_local(settings, plan)
    timings["extract_s"] = time.perf_counter() - started
    started = time.perf_counter()
    build_and_publish(settings)
    timings["dbt_build_s"] = time.perf_counter() - started
    truth = pq.read_table(settings.ground_truth_dir / "classicmodels" / "spike_hours.parquet").to_pylist()
    with read_only(settings) as conn:
        detected = [
            DetectedSpike(*row)
            for row in conn.execute(
                "select product_code, country, spike_start, last_rising_hour from analytics.fct_demand_spikes"
            ).fetchall()
        ]
        lines = conn.execute("select count(*) from analytics.fct_order_lines").fetchone()[0]
    result = score(injected_from_truth(truth), detected)
    return vars(result) | {"seed": seed, "order_lines": lines, "timings": timings}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="prod")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, action="append", help="repeatable (default 42 and 7)")
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
    results = [run_seed(args, seed) for seed in args.seed or [42, 7]]
    print(json.dumps(results, indent=2, default=str))
    print(
        "\n| preset | seed | order lines | injected spikes | detected spikes | spike precision | spike recall "
        "| hour precision | hour recall | extract (s) | dbt build (s) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in results:
        print(
            f"| {args.preset} x{args.scale:g} | {r['seed']} | {r['order_lines']:,} | {r['injected_spikes']} | "
            f"{r['detected_spikes']} | {_fmt(r['spike_precision'])} | {_fmt(r['spike_recall'])} | "
            f"{_fmt(r['hour_precision'])} | {_fmt(r['hour_recall'])} | {r['timings']['extract_s']:.1f} | "
            f"{r['timings']['dbt_build_s']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
