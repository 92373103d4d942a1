"""The platform's main job end to end on the embedded defaults (`./platform run`).

1. the sandbox: its private MariaDB (unless the environment names a replica), seeded when empty;
   its connections are handed to every process launched from here;
2. Airflow's metadata database and pools, dbt's precompiled manifest: `./platform up`'s Airflow (its
   database in the sandbox's PostgreSQL, its keys, its log folder), so these runs are seen in its UI
   with their task logs;
3. `airflow dags test watch_classicmodels_schema`: the replica's schema against the contract;
4. `airflow dags test extract_classicmodels`: the replica into the lake (atomic batches);
5. `airflow dags test transform_warehouse`: dbt builds the marts and exports the training table
   (scheduled on extraction's Asset in production; `dags test` does not chain DAGs, so it runs here);
6. `airflow dags test retrain_recommender`: trains, evaluates and gates a recommender version and
   publishes it to the sandbox's PostgreSQL + pgvector (started in step 1);
7. show the lake, the marts and the recommender's evaluation beside popularity.

Each `dags test` runs its tasks through the LocalExecutor (`--use-executor`), as `up`'s scheduler
does: each task is a process that writes its log where the UI reads it
(``<AIRFLOW_HOME>/logs/dag_id=…/run_id=…/task_id=…/attempt=N.log``; run in-process, a task writes
none) and reports to Airflow's execution API, served here for the length of the runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from retail_platform.extract.intervals import READ_TO_NOW
from retail_platform.sandbox.airflow_setup import AirflowFailed, airflow_command, prepare_airflow
from retail_platform.sandbox.seed import sandbox_source, seed_source, source_is_seeded, source_row_counts
from retail_platform.settings import Settings
from retail_platform.sources import extract_dag_ids

log = logging.getLogger(__name__)
EXECUTION_API_START_TIMEOUT_S = 180


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def shared_airflow_env(settings: Settings) -> dict[str, str]:
    """`./platform up`'s Airflow: its metadata database (a database of its own in the sandbox's
    PostgreSQL, never SQLite), its keys, its log folder; the runs made with it are `up`'s runs."""
    from retail_platform.sandbox.postgres import LocalPostgres
    from retail_platform.sandbox.settings import SandboxSettings
    from retail_platform.sandbox.stack import Stack, airflow_metadata_url

    stack = Stack(replace(SandboxSettings.from_env(), platform=settings))
    # Started even when the vectors live elsewhere (AIRFLOW_CONN_RETAIL_VECTORS); left alone if running.
    LocalPostgres.from_settings(stack.settings).ensure_running()
    return stack.airflow_env({}) | {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_metadata_url(stack)}


@contextlib.contextmanager
def execution_api(env: dict[str, str], log_file: Path) -> Iterator[dict[str, str]]:
    """Airflow's execution API (that app alone of the API server) while the DAGs run: the executor's
    task processes report to it. Yields ``env`` pointing task processes at it."""
    from retail_platform.sandbox.processes import free_port, log_tail, stop_process

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = env | {"AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/"}
    argv = [sys.executable, "-m", "airflow", "api-server", "--apps", "execution",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as out:
        server = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + EXECUTION_API_START_TIMEOUT_S
        while not _answers(f"{url}/execution/health"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise AirflowFailed(
                    f"Airflow's execution API did not start on {url} (log: {log_file}):\n{log_tail(log_file)}"
                )
            time.sleep(0.5)
        yield env
    finally:
        if server.poll() is None:
            stop_process(server.pid, timeout=30, group=True, kill_after=True)
        server.wait()


def run_dags(settings: Settings, env: dict[str, str], dags: list[tuple[str, str]]) -> None:
    """`airflow dags test` each DAG (id, what it does) in turn, its tasks through the executor."""
    logs = settings.state_dir / "logs"
    with execution_api(env, logs / "airflow-execution-api.log") as env:
        for dag_id, what in dags:
            _banner(f"airflow dags test {dag_id} ({what})")
            # No logical date given: each run's is its own start (`dags test` starts a run at its
            # logical date; one date for all counted the earlier DAGs' time in each later run).
            # An extraction reads the interval that holds now, up to now (extract/intervals.py).
            reads_now = dag_id in extract_dag_ids(settings.contracts_dir)
            conf = ["-c", json.dumps({READ_TO_NOW: True})] if reads_now else []
            log_file = logs / f"{dag_id}.log"
            seconds = airflow_command(["dags", "test", dag_id, *conf, "--use-executor"], log_file, env)
            print(f"succeeded in {seconds:.0f} s (log: {logs / f'{dag_id}.log'}; task logs in the UI)")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


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
    if _up_runs(settings):
        # One metadata database: `up`'s scheduler would take this run's tasks as its own.
        print(f"`./platform up` runs on this state folder ({settings.state_dir}): its scheduler runs")
        print("the DAGs (trigger them in its UI); or `./platform down` first")
        return 1
    _banner("source")
    from retail_platform.sandbox import launcher
    from retail_platform.sandbox.settings import SANDBOX_SOURCE
    from retail_platform.sources import names_for

    own_source = launcher.source_is_configured(settings)
    names = names_for(settings, SANDBOX_SOURCE)
    reader, _ = sandbox_source(settings)  # starts the sandbox's MariaDB unless the environment names one
    print(f"{'configured' if own_source else 'the sandbox MariaDB'}: {reader.describe()} (read-only user)")
    _banner("vector database")
    print(start_vector_database())

    if regenerate or not source_is_seeded(settings):
        _banner("seeding the source" + (f" from {dump}" if dump else f" (preset {preset}, seed {seed})"))
        # A sandbox that lives in the present: the modern variant's calendar ends now, a spike
        # rising; `--variant original` keeps the published dates exactly.
        summary = seed_source(
            preset=preset,
            scale=scale,
            seed=seed,
            variant=variant,
            dump=dump,
            replace=True,
            settings=settings,
            ends_now=variant == "modern",
        )
        print(
            f"generated in {summary['generate_s']} s, loaded in {summary['load_s']} s; "
            f"ground truth in {summary['ground_truth']}"
        )
    else:
        print("source already seeded (pass --regenerate to rebuild it)")
        if not own_source:  # a source of the sandbox's own: brought to now, what it holds kept
            from retail_platform.sandbox.seed import bring_source_to_present

            print(bring_source_to_present(settings).describe())
    counts = source_row_counts(settings)
    print("  " + ", ".join(f"{table} {count:,}" for table, count in counts.items()))

    _banner("Airflow metadata database, pools; dbt manifest")
    from retail_platform.contract.model import load_contract
    from retail_platform.sources import source_names
    from retail_platform.warehouse.dbt_runner import ensure_manifest
    from retail_platform.warehouse.dbt_sources import sources_in_step

    if not all(
        sources_in_step(load_contract(n.contract_path), settings.dbt_project_dir)
        for n in source_names(settings.contracts_dir)
    ):
        print("warning: the dbt sources differ from the source contract; run `retail contract dbt-sources`")
    env = shared_airflow_env(settings)
    prepare_airflow(settings, env)
    ensure_manifest(settings)
    print(f"ready (Airflow home {env['AIRFLOW_HOME']}, metadata in the sandbox's PostgreSQL)")

    run_dags(
        settings,
        env,
        [
            (names.watch_dag_id, "the replica's schema against the contract"),
            (names.extract_dag_id, "the replica into the lake"),
            ("transform_warehouse", "dbt: staging, marts, training table export"),
            # Daily in production: merges each table's batches (nothing to merge after one batch).
            ("compact_lake", "the lake's compaction"),
            # Scheduled on the training export's Asset in production; a manual run trains at once.
            ("retrain_recommender", "the recommender: train, evaluate, gate, publish to pgvector"),
        ],
    )

    _banner("the lake and the marts")
    show_results(settings)
    _banner("the recommender")
    show_recommender(settings)

    _banner("serving: shopper events through the stream, one request to the API")
    from retail_platform.sandbox.serving import demonstrate

    demonstrate()

    if stop_source and not own_source:
        from retail_platform.sandbox.mariadb import LocalMariaDB

        LocalMariaDB.from_settings().stop()
        print("\nthe sandbox MariaDB stopped")
    _banner("to look at it")
    print("  ./platform dashboard   Superset with marketing's dashboard 'Demand now' on these marts")
    print(
        "  ./platform up          the whole platform on its schedules, with the Airflow UI (./platform down)"
    )
    return 0


def _up_runs(settings: Settings) -> bool:
    from retail_platform.sandbox.supervisor import Supervisor

    supervisor = Supervisor(settings.state_dir)
    return supervisor.is_running() and supervisor.manages("airflow-scheduler")


def start_vector_database() -> str:
    """The sandbox's PostgreSQL + pgvector, unless AIRFLOW_CONN_RETAIL_VECTORS names one; its
    connection goes into this process's environment, handed on to every Airflow run from here."""
    from retail_platform.connections import conn_env_var
    from retail_platform.sandbox import launcher
    from retail_platform.vectors import VECTORS_CONN_ID

    if os.environ.get(conn_env_var(VECTORS_CONN_ID)):
        return f"configured: {conn_env_var(VECTORS_CONN_ID)}"
    os.environ.update(launcher.start(only={"postgres"}))
    from retail_platform.sandbox.postgres import LocalPostgres

    return f"the sandbox PostgreSQL: {LocalPostgres.from_settings().describe()}"


def show_recommender(settings: Settings) -> None:
    """What serves now, and its evaluation beside popularity (from the version's manifest)."""
    from retail_platform.recommender.registry import Registry
    from retail_platform.vectors.store import conninfo_from_connection, current_pointer

    pointer = current_pointer(conninfo_from_connection())
    registry = Registry.from_settings(settings)
    newest = (registry.versions() or [None])[-1]
    if newest is None:
        print("  no version trained yet")
        return
    print(
        f"  newest version {newest['version']} (training build {newest['training_build']}): "
        f"{newest['status']}"
    )
    print(f"  gate: {'; '.join(newest['gate']['reasons'])}")
    if pointer is not None:
        print(f"  serving: version {pointer.version}, popular list of build {pointer.popular_build}")
    split = newest["evaluation"]["split"]
    print(
        f"\n  evaluation (time-based split at {split['cutoff']}, "
        "NDCG@10 and recall@10 over the whole catalogue):"
    )
    print("    " + newest["evaluation"]["report"].replace("\n", "\n    "))


def show_results(settings: Settings) -> None:
    from retail_platform.lake.batches import lake_for
    from retail_platform.sandbox.settings import SANDBOX_SOURCE
    from retail_platform.state import state_for
    from retail_platform.warehouse.export import read_latest_export
    from retail_platform.warehouse.snapshots import published_build_id, read_only

    state = state_for(settings, SANDBOX_SOURCE)
    checked = (state.get("schema", "latest.json") or {}).get("checked_at", "never")
    paused = state.pauses()
    status = ", ".join(f"{t} ({p['reason']})" for t, p in paused.items()) if paused else "no table paused"
    print(f"  schema watch: last read {checked}; {status}")
    lake = lake_for(settings, SANDBOX_SOURCE)
    for table in sorted(source_row_counts(settings)):
        batches = lake.visible_manifests(table)
        rows = sum(b["row_count"] for b in batches)
        print(f"  lake {lake.table_dir(table)}: {len(batches)} visible batches, {rows:,} rows")
    manifest, _ = read_latest_export(settings)
    print(f"  lake ml/ratings_ml_training: build {manifest['build_id']}, {manifest['row_count']:,} rows")
    with read_only(settings) as conn:
        print(f"\n  warehouse {settings.duckdb_path} (published build {published_build_id(settings)}):")
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
