"""The platform's main job end to end on the embedded defaults (`./platform run`).

1. the sandbox: its private MariaDB (unless the environment names a replica), seeded when empty;
   its connections are handed to every process launched from here;
2. Airflow's metadata database and pools, dbt's precompiled manifest;
3. `airflow dags test watch_source_schema`: the replica's schema against the contract;
4. `airflow dags test extract_replica`: the replica into the lake (atomic batches);
5. `airflow dags test transform_warehouse`: dbt builds the marts and exports the training table
   (scheduled on extraction's Asset in production; `dags test` does not chain DAGs, so it runs here);
6. show the lake and the marts.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from retail_platform.sandbox.seed import sandbox_source, seed_source, source_is_seeded, source_row_counts
from retail_platform.settings import Settings

log = logging.getLogger(__name__)
POOLS = {"classicmodels_replica": None, "warehouse": 1}  # None: the replica-pool setting


class PipelineStepFailed(RuntimeError):
    pass


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _airflow(args: list[str], log_file: Path, env: dict) -> float:
    """Run the Airflow CLI; its (long) output goes to a log file, the tail to the screen on failure."""
    started = time.perf_counter()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as out:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-40:])
        raise PipelineStepFailed(f"airflow {' '.join(args)} failed (log: {log_file}):\n{tail}")
    return seconds


def airflow_env(settings: Settings) -> dict:
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(settings.state_dir / "airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(settings.project_dir / "dags"))
    env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(settings.project_dir / "plugins"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
    env.setdefault("RETAIL_STATE_DIR", str(settings.state_dir))
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def prepare_airflow(settings: Settings, env: dict) -> None:
    logs = settings.state_dir / "logs"
    _airflow(["db", "migrate"], logs / "airflow-db-migrate.log", env)
    for pool, slots in POOLS.items():
        size = settings.replica_pool_slots if slots is None else slots
        _airflow(
            ["pools", "set", pool, str(size), f"retail platform: {pool}"],
            logs / f"airflow-pool-{pool}.log",
            env,
        )


def run_pipeline(
    *,
    preset: str = "classic",
    scale: float = 1.0,
    seed: int = 42,
    variant: str = "modern",
    dump: Path | None = None,
    regenerate: bool = False,
    stop_source: bool = False,
    settings: Settings | None = None,
) -> int:
    settings = settings or Settings.from_env()
    _banner("source")
    from retail_platform.connections import conn_env_var

    own_source = bool(os.environ.get(conn_env_var(settings.source_conn_id)))
    reader, _ = sandbox_source(settings)  # starts the sandbox's MariaDB unless the environment names one
    print(f"{'configured' if own_source else 'the sandbox MariaDB'}: {reader.describe()} (read-only user)")

    if regenerate or not source_is_seeded(settings):
        _banner("seeding the source" + (f" from {dump}" if dump else f" (preset {preset}, seed {seed})"))
        summary = seed_source(
            preset=preset, scale=scale, seed=seed, variant=variant, dump=dump, replace=True, settings=settings
        )
        print(
            f"generated in {summary['generate_s']} s, loaded in {summary['load_s']} s; "
            f"ground truth in {summary['ground_truth']}"
        )
    else:
        print("source already seeded (pass --regenerate to rebuild it)")
    counts = source_row_counts(settings)
    print("  " + ", ".join(f"{table} {count:,}" for table, count in counts.items()))

    _banner("Airflow metadata database, pools; dbt manifest")
    from retail_platform.contract.model import load_contract
    from retail_platform.warehouse.dbt_runner import ensure_manifest
    from retail_platform.warehouse.dbt_sources import sources_in_step

    if not sources_in_step(load_contract(settings.contract_path), settings.dbt_project_dir):
        print("warning: the dbt sources differ from the source contract; run `retail contract dbt-sources`")
    env = airflow_env(settings)
    prepare_airflow(settings, env)
    ensure_manifest(settings)
    print(f"ready (Airflow home {env['AIRFLOW_HOME']})")

    logical_date = datetime.now(UTC).replace(microsecond=0).isoformat()
    logs = settings.state_dir / "logs"
    for dag_id, what in (
        ("watch_source_schema", "the replica's schema against the contract"),
        ("extract_replica", "the replica into the lake"),
        ("transform_warehouse", "dbt: staging, marts, training table export"),
    ):
        _banner(f"airflow dags test {dag_id} ({what})")
        seconds = _airflow(["dags", "test", dag_id, logical_date], logs / f"{dag_id}.log", env)
        print(f"succeeded in {seconds:.0f} s (log: {logs / f'{dag_id}.log'})")

    _banner("the lake and the marts")
    show_results(settings)

    if stop_source and not own_source:
        from retail_platform.sandbox.mariadb import LocalMariaDB

        LocalMariaDB.from_settings().stop()
        print("\nthe sandbox MariaDB stopped")
    return 0


def show_results(settings: Settings) -> None:
    from retail_platform.extract.runner import lake_for, state_for
    from retail_platform.warehouse.export import read_latest_export
    from retail_platform.warehouse.snapshots import published_snapshot, read_only

    state = state_for(settings)
    checked = (state.get("schema", "latest.json") or {}).get("checked_at", "never")
    paused = state.pauses()
    status = ", ".join(f"{t} ({p['reason']})" for t, p in paused.items()) if paused else "no table paused"
    print(f"  schema watch: last read {checked}; {status}")
    lake = lake_for(settings)
    for table in sorted(source_row_counts(settings)):
        batches = lake.committed_batches(table)
        rows = sum(b["row_count"] for b in batches)
        print(f"  lake raw/classicmodels/{table}: {len(batches)} committed batches, {rows:,} rows")
    manifest, _ = read_latest_export(settings)
    print(f"  lake ml/ratings_ml_training: build {manifest['build_id']}, {manifest['row_count']:,} rows")
    with read_only(settings) as conn:
        print(f"\n  warehouse {settings.duckdb_path} (published build {published_snapshot(settings).name}):")
        for relation in (
            "analytics.fct_order_lines",
            "analytics.fct_hourly_demand",
            "analytics.fct_demand_spikes",
            "analytics.fct_popular_products_7d",
            "ml.ratings_ml_training",
        ):
            count = conn.execute(f"select count(*) from {relation}").fetchone()[0]
            print(f"    {relation:<36} {count:>10,} rows")
        _print_query(
            conn,
            "latest hourly demand",
            """
            select order_hour, product_code, country, orders, units, revenue
            from analytics.fct_hourly_demand order by order_hour desc, revenue desc limit 5""",
        )
        _print_query(
            conn,
            "demand spikes (newest first)",
            """
            select spike_start, product_code, country, rising_hours, peak_orders, round(strength, 1) as strength,
                   is_rising
            from analytics.fct_demand_spikes order by spike_start desc limit 5""",
        )
        _print_query(
            conn,
            "popular products (the recommender's fallback)",
            """
            select popularity_rank, product_code, product_name, units
            from analytics.fct_popular_products_7d order by popularity_rank limit 5""",
        )


def _print_query(conn, title: str, sql: str) -> None:
    cursor = conn.execute(sql)
    columns = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    print(f"\n  {title}:")
    widths = [
        max(len(str(c)), *(len(str(r[i])) for r in rows)) if rows else len(c) for i, c in enumerate(columns)
    ]
    print("    " + "  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("    " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
