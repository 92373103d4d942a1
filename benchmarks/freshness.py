"""Freshness under live writes, with the DAGs on their schedule (the real Airflow scheduler).

    ./platform python benchmarks/freshness.py [--preset prod] [--minutes 45] [--schedule '*/10 * * * *'] [--rate 1]

In its own state folder (.state/bench-freshness: MariaDB, lake, warehouse, Airflow home), it seeds
the preset, starts `airflow standalone` (scheduler, DAG processor, API server, triggerer) with
`extract_classicmodels` on the given cron, `transform_warehouse` on its Asset and the schema watch
(the retraining and the compaction DAGs are left out: see `measured_dags`), and keeps inserting and
shipping orders with the live generator. It reads, from Airflow's metadata database:

* each cycle: the extraction run's start to the end of the transform run it triggered;
* each build's `data_as_of` (the newest order in `fct_hourly_demand`, on the marts' Asset event).

Two figures of how old the data readers see is, sampled every 15 s:

* **independent**: the source itself says which live orders exist and when they were placed; the
  published warehouse (`fct_orders`, read-only) says which of them readers see. The marts are
  complete up to the earliest placed order they do not show yet (or the newest order, when they
  show all); the age at time t is t minus that. Nothing the platform computes about itself enters.
* **platform**: t minus the `data_as_of` of the last build finished by t (the newest order in
  `fct_hourly_demand`, on the marts' Asset event), as the platform reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_ts(value) -> datetime | None:
    if value is None:
        return None
    text = str(value).replace(" ", "T")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_progress(db: Path) -> dict:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        runs = conn.execute(
            "select dag_id, run_id, start_date, end_date, state, run_type from dag_run "
            "where dag_id in ('extract_classicmodels', 'transform_warehouse') order by start_date"
        ).fetchall()
        events = conn.execute(
            "select e.extra, e.timestamp, e.source_run_id from asset_event e join asset a on a.id = e.asset_id "
            "where a.uri = 'retail://warehouse/marts/analytics' order by e.timestamp"
        ).fetchall()
    finally:
        conn.close()
    return {
        "runs": runs,
        "builds": [(json.loads(extra) if extra else {}, ts, run) for extra, ts, run in events],
    }


def independent_age_s(settings, reader, started: datetime, now: datetime) -> float | None:
    """How far behind the source the published marts are, from the source and the marts alone."""
    from retail_platform.source.connection import connect
    from retail_platform.warehouse.snapshots import NoPublishedWarehouse, read_only

    conn = connect(reader)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT orderNumber, orderTimestamp FROM orders WHERE orderTimestamp >= %s",
                (started.replace(tzinfo=None),),
            )
            placed = {number: ts.replace(tzinfo=UTC) for number, ts in cur.fetchall()}
    finally:
        conn.close()
    if not placed:
        return None
    try:
        with read_only(settings) as mart:
            shown = {n for (n,) in mart.execute("select order_number from analytics.fct_orders").fetchall()}
    except NoPublishedWarehouse:
        return None
    missing = [ts for number, ts in placed.items() if number not in shown]
    complete_until = min(missing) if missing else max(placed.values())
    return max(0.0, (now - complete_until).total_seconds())


MEASURED_DAGS = ("extract_replica.py", "transform_warehouse.py", "watch_source_schema.py")


def measured_dags(state: Path) -> Path:
    """The DAGs on the path from the replica to the marts (and the schema watch beside them). The
    retraining (weekly; its first run would train at once) and the daily compaction are left out:
    they are not on that path, and on two cores they would only add their CPU to it."""
    folder = state / "dags"
    folder.mkdir(parents=True, exist_ok=True)
    for name in MEASURED_DAGS:
        link = folder / name
        if not link.exists():
            link.symlink_to(ROOT / "dags" / name)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="prod")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--minutes", type=float, default=45)
    parser.add_argument("--schedule", default="*/10 * * * *")
    parser.add_argument("--rate", type=float, default=1.0, help="live orders a second")
    parser.add_argument("--state-dir", default=str(ROOT / ".state" / "bench-freshness"))
    parser.add_argument("--reuse-source", action="store_true", help="keep an already seeded source")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    state = Path(args.state_dir).resolve()
    airflow_home = state / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    env = {
        "RETAIL_STATE_DIR": str(state),
        "RETAIL_LAKE_URI": str(state / "lake"),
        "RETAIL_DUCKDB_PATH": str(state / "warehouse" / "retail.duckdb"),
        "RETAIL_EXTRACT_SCHEDULE": args.schedule,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(measured_dags(state)),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        # Task processes report to the API server's execution API: it must point at that port.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
    }
    os.environ.update(env)
    for name in [n for n in os.environ if n.startswith("AIRFLOW_CONN_CLASSICMODELS")]:
        del os.environ[name]  # always the benchmark's own private source
    (state / "lake").mkdir(parents=True, exist_ok=True)

    from retail_platform.sandbox.generator.live import run_live
    from retail_platform.sandbox.pipeline import prepare_airflow
    from retail_platform.sandbox.seed import sandbox_source, seed_source, source_is_seeded
    from retail_platform.settings import Settings
    from retail_platform.warehouse.dbt_runner import ensure_manifest

    settings = Settings.from_env()
    if not (args.reuse_source and source_is_seeded(settings)):
        summary = seed_source(preset=args.preset, scale=args.scale, replace=True, settings=settings)
        print(f"seeded {args.preset}: {summary['row_counts']}", file=sys.stderr, flush=True)
    reader = sandbox_source(settings)[0]
    # Every part of the sandbox (the retraining DAG publishes to its vector database, ...).
    from retail_platform.sandbox.launcher import start as start_sandbox

    child_env = dict(os.environ) | start_sandbox()
    prepare_airflow(settings, child_env)
    ensure_manifest(settings)
    log = (state / "logs").mkdir(parents=True, exist_ok=True) or (state / "logs" / "standalone.log")
    print(f"starting airflow standalone (log {log})", file=sys.stderr, flush=True)
    airflow = subprocess.Popen(
        [sys.executable, "-m", "airflow", "standalone"],
        env=child_env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stop = threading.Event()
    live_stats = {}

    def live():
        live_stats["stats"] = run_live(
            sandbox_source(settings)[1],
            rate_per_s=args.rate,
            duration_s=None,
            ship_fraction=0.3,
            tick_s=1.0,
            seed=7,
            truth_dir=settings.ground_truth_dir / "classicmodels",
            stop=stop,
        )

    # SIGTERM (timeout, Ctrl-C from a supervisor) must still stop Airflow: it runs in its own session.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))
    writer = threading.Thread(target=live, daemon=True)
    writer.start()
    started = datetime.now(UTC)
    deadline = time.monotonic() + args.minutes * 60
    samples = []
    db = airflow_home / "airflow.db"
    try:
        while time.monotonic() < deadline:
            time.sleep(15)
            if airflow.poll() is not None:
                raise RuntimeError(f"airflow standalone exited with {airflow.returncode}; see {log}")
            try:
                progress = read_progress(db)
            except sqlite3.Error:
                continue
            now = datetime.now(UTC)
            finished = [(parse_ts(b[0].get("data_as_of")), parse_ts(b[1])) for b in progress["builds"]]
            # Only builds that include live orders: the first one holds the preset's history.
            finished = [(as_of, at) for as_of, at in finished if as_of and at <= now and as_of >= started]
            if finished:
                age = (now - finished[-1][0]).total_seconds()
                independent = independent_age_s(settings, reader, started, now)
                samples.append((now, age, independent))
                print(
                    f"{now:%H:%M:%S} builds {len(finished)}: marts complete up to "
                    f"{(independent or 0) / 60:.1f} min ago (independent), newest order {age / 60:.1f} min old",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        stop.set()
        writer.join(timeout=30)
        os.killpg(airflow.pid, signal.SIGTERM)
        try:
            airflow.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(airflow.pid, signal.SIGKILL)
    progress = read_progress(db)
    runs = progress["runs"]
    extracts = [r for r in runs if r[0] == "extract_classicmodels" and r[4] == "success"]
    transforms = [r for r in runs if r[0] == "transform_warehouse" and r[4] == "success"]
    cycles = []
    for run in transforms:
        begun = parse_ts(run[2])
        # The extraction that triggered it: the latest one finished by its start (the transform run
        # is created a few milliseconds before the extraction run's end is recorded).
        triggering = [e for e in extracts if parse_ts(e[3]) <= begun + timedelta(seconds=5)]
        if triggering:
            extract = triggering[-1]
            cycles.append(
                {
                    "extract_s": (parse_ts(extract[3]) - parse_ts(extract[2])).total_seconds(),
                    "transform_s": (parse_ts(run[3]) - begun).total_seconds(),
                    "cycle_s": (parse_ts(run[3]) - parse_ts(extract[2])).total_seconds(),
                }
            )
    steady = cycles[1:] or cycles  # the first cycle is the initial load
    ages = [a for _, a, _ in samples]
    independent = [i for _, _, i in samples if i is not None]
    result = {
        "preset": args.preset,
        "scale": args.scale,
        "schedule": args.schedule,
        "transform": "one dbt build task",
        "minutes": args.minutes,
        "live_rate_per_s": args.rate,
        "started": started.isoformat(),
        "live": {
            k: v for k, v in vars(live_stats.get("stats", object())).items() if k != "inserted_order_numbers"
        },
        "cycles": cycles,
        "initial_cycle_s": cycles[0]["cycle_s"] if cycles else None,
        "steady_cycle_s_max": max((c["cycle_s"] for c in steady), default=None),
        "steady_cycle_s_median": statistics.median([c["cycle_s"] for c in steady]) if steady else None,
        "independent_age_s_max": max(independent, default=None),
        "independent_age_s_median": statistics.median(independent) if independent else None,
        "platform_age_s_max": max(ages, default=None),
        "platform_age_s_median": statistics.median(ages) if ages else None,
        "age_samples": len(ages),
        "failed_runs": [r[:2] for r in runs if r[4] == "failed"],
    }
    print(json.dumps(result, indent=2, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
