"""Freshness of the platform as it runs: `./platform up --live RATE --spike-every M`, measured from outside.

    ./platform python benchmarks/freshness.py [--preset prod] [--minutes 60] [--schedule '*/2 * * * *']
        [--rate 1] [--spike-every 12] [--state-dir DIR] [--port PORT] [--reuse-source] [--json FILE]
    ./platform python benchmarks/freshness.py --smoke      # classic preset, 1-minute cron, ~3 minutes

In its own state folder and on its own Airflow port it seeds the preset (its calendar ending now,
unless `--reuse-source` finds it seeded), then starts the platform exactly as `./platform up` does
(supervisord; Airflow's metadata in the sandbox's PostgreSQL; LocalExecutor; every DAG on its
schedule) with `RETAIL_EXTRACT_SCHEDULE` set to `--schedule` and the live generator writing
`--rate` orders a second with a demand spike every `--spike-every` minutes; Superset and the serving
side are left out unless `--full` (neither is on the path from the replica to the marts and the
alerts). It measures, independently of what the platform says about itself:

* **data age**, every 15 s: the source (admin user) says which live orders exist and when they were
  placed, the published warehouse (`fct_orders`, read-only) which of them readers see; the marts are
  complete up to the earliest placed order they do not show (or the newest, when they show all);
  the age is now minus that. Median, p99, max.
* **cycles**, from Airflow's metadata database: each transform run's triggering extraction start to
  `publish_warehouse`'s end (marts published), and where the time went (extraction's tasks,
  the hand-over to the transform, the build, the publish, the scheduling gaps between tasks).
* **spike → alert and → "Spikes rising now"**: the live generator writes each spike as ground truth
  when it starts (`live_spikes.jsonl`); it becomes detectable when its second clock hour has more of
  its orders than the first and at least the rule's peak (read from the source's orders). From
  then: the alert's arrival in the alerts file (the Slack stand-in, polled every 2 s) and its first
  appearance as rising in the published `fct_demand_spikes` (what the dashboard's "Spikes rising
  now" reads, polled every 5 s).
* **replica load**: MariaDB's own per-user counters (`userstat`, `information_schema.USER_STATISTICS`)
  for the platform's read-only user: statements a minute, busy and CPU time, rows read.
* **CPU**: psutil over each supervised program's process tree (the scheduler's LocalExecutor
  workers and their task processes counted apart from the scheduler itself).

Prints a markdown table and the JSON of every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRACT_DAG = "extract_classicmodels"
TRANSFORM_DAG = "transform_warehouse"
AGE_EVERY_S = 15.0
SPIKE_EVERY_S = 5.0
ALERT_EVERY_S = 2.0
CPU_EVERY_S = 5.0
SPIKE_MIN_PEAK_ORDERS = 4  # dbt_project.yml's spike_min_peak_orders


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (p99 of 240 samples is the 238th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(values: list[float]) -> dict:
    return {
        "n": len(values),
        "median": statistics.median(values) if values else None,
        "p95": quantile(values, 0.95),
        "p99": quantile(values, 0.99),
        "max": max(values, default=None),
    }


# ---------------------------------------------------------------------------- the platform
@dataclass
class Platform:
    """`./platform up` in the benchmark's state folder; `down` on the way out."""

    env: dict[str, str]
    log: Path

    def run(self, *args: str, timeout: float) -> None:
        with self.log.open("a") as out:
            out.write(f"\n$ ./platform {' '.join(args)}  ({utcnow():%H:%M:%S})\n")
            out.flush()
            done = subprocess.run(
                [str(ROOT / "platform"), *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        if done.returncode != 0:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"./platform {' '.join(args)} exited {done.returncode}:\n{tail}")


def seed(args, settings) -> None:
    """The preset with its calendar ending now, in the benchmark's own MariaDB (started on its own;
    `up` hands it over to supervisord)."""
    from retail_platform.sandbox import launcher
    from retail_platform.sandbox.seed import seed_source, source_is_seeded

    os.environ.update(launcher.start(only={"mariadb"}))
    if args.reuse_source and source_is_seeded(settings):
        print("source already seeded: kept", file=sys.stderr, flush=True)
        return
    began = time.monotonic()
    summary = seed_source(preset=args.preset, replace=True, settings=settings, ends_now=True)
    print(
        f"seeded {args.preset} in {time.monotonic() - began:.0f} s: {summary['row_counts']}",
        file=sys.stderr,
        flush=True,
    )


# ---------------------------------------------------------------------------- independent clocks
class Source:
    """The source as its admin sees it (the platform reads with the read-only user: its counters
    stay the platform's own)."""

    def __init__(self, admin):
        from retail_platform.source.connection import connect

        self.conn = connect(admin, autocommit=True)

    def max_order(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(orderNumber), 0) FROM orders")
            return int(cur.fetchone()[0])

    def orders_after(self, number: int) -> dict[int, datetime]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT orderNumber, orderTimestamp FROM orders WHERE orderNumber > %s", (number,))
            return {n: aware(ts) for n, ts in cur.fetchall()}

    def spike_detectable_at(self, spike: dict) -> datetime | None:
        """When the spike's second clock hour first held more of its orders than the first and at
        least the rule's peak: from then on a build that has those orders shows it."""
        start_hour = datetime.fromisoformat(spike["start_hour"])
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT o.orderTimestamp FROM orders o JOIN orderdetails d ON d.orderNumber = o.orderNumber "
                "JOIN customers c ON c.customerNumber = o.customerNumber WHERE d.productCode = %s "
                "AND c.country = %s AND o.orderTimestamp >= %s AND o.orderTimestamp < %s "
                "AND o.status <> 'Cancelled' ORDER BY o.orderTimestamp",
                (spike["product_code"], spike["country"], start_hour, start_hour + timedelta(hours=2)),
            )
            times = [aware(ts) for (ts,) in cur.fetchall()]
        second_hour = aware(start_hour + timedelta(hours=1))
        first = sum(1 for t in times if t < second_hour)
        in_second = [t for t in times if t >= second_hour]
        need = max(first + 1, SPIKE_MIN_PEAK_ORDERS)
        return in_second[need - 1] if len(in_second) >= need else None

    def close(self) -> None:
        self.conn.close()


def published_orders_after(settings, number: int) -> set[int] | None:
    from retail_platform.warehouse.snapshots import NoPublishedWarehouse, read_only

    try:
        with read_only(settings) as mart:
            rows = mart.execute(
                "select order_number from analytics.fct_orders where order_number > ?", [number]
            )
            return {n for (n,) in rows.fetchall()}
    except NoPublishedWarehouse:
        return None


def rising_spikes(settings) -> set[tuple[str, str]]:
    """What the dashboard's "Spikes rising now" shows: the published rising spikes."""
    from retail_platform.warehouse.snapshots import NoPublishedWarehouse, read_only

    try:
        with read_only(settings) as mart:
            rows = mart.execute(
                "select product_code, country from analytics.fct_demand_spikes where is_rising"
            )
            return {(p, c) for p, c in rows.fetchall()}
    except NoPublishedWarehouse:
        return set()


@dataclass
class Watch:
    """Samples gathered while the platform runs."""

    ages: list[tuple[datetime, float]] = field(default_factory=list)
    alerts: dict[tuple[str, str], datetime] = field(default_factory=dict)  # first alert received
    alert_count: dict[tuple[str, str], int] = field(default_factory=dict)
    rising: dict[tuple[str, str], datetime] = field(default_factory=dict)  # first seen rising
    cpu: dict[str, float] = field(default_factory=dict)  # seconds, per part


def watch_alerts(settings, watch: Watch, stop: threading.Event) -> None:
    """The Slack stand-in's receipt: each demand-spike line the moment it lands in the alerts file."""
    path, offset = settings.alerts_file, 0
    while not stop.wait(ALERT_EVERY_S):
        if not path.exists():
            continue
        with path.open(encoding="utf-8") as fh:
            fh.seek(offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        offset += len(complete.encode("utf-8"))
        now = utcnow()
        for line in complete.splitlines():
            alert = json.loads(line)
            if alert.get("kind") != "demand_spike":
                continue
            key = (alert["details"]["product_code"], alert["details"]["country"])
            watch.alerts.setdefault(key, now)
            watch.alert_count[key] = watch.alert_count.get(key, 0) + 1


def watch_rising(settings, watch: Watch, stop: threading.Event) -> None:
    while not stop.wait(SPIKE_EVERY_S):
        try:
            seen = rising_spikes(settings)
        except Exception as exc:  # a snapshot switched under the reader: the next poll reads the new one
            print(f"rising spikes not read: {exc}", file=sys.stderr)
            continue
        now = utcnow()
        for key in seen:
            watch.rising.setdefault(key, now)


# ---------------------------------------------------------------------------- CPU
def tree_cpu_s(root) -> tuple[float, float]:
    """(the root process's own CPU seconds, its whole tree's): every live process's own time plus
    what its reaped children used (the kernel adds a child's times to its parent's when reaped)."""
    import psutil

    try:
        own = root.cpu_times()
    except psutil.Error:
        return 0.0, 0.0
    total = own.user + own.system + own.children_user + own.children_system
    for child in root.children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return own.user + own.system, total


def watch_cpu(supervisor, watch: Watch, stop: threading.Event) -> None:
    """Each supervised program's CPU since the watch began (the last reading of each process tree;
    a program restarted in the run adds its new tree)."""
    import psutil

    base: dict[tuple[str, int], tuple[float, float]] = {}
    last: dict[tuple[str, int], tuple[float, float]] = {}
    while True:
        for name, state in supervisor.states().items():
            if state.pid is None:
                continue
            try:
                own, total = tree_cpu_s(psutil.Process(state.pid))
            except psutil.Error:
                continue
            base.setdefault((name, state.pid), (own, total))
            last[(name, state.pid)] = (own, total)
        per: dict[str, float] = {}
        for (name, pid), (own, total) in last.items():
            own0, total0 = base[(name, pid)]
            if name == "airflow-scheduler":
                per["airflow-scheduler"] = per.get("airflow-scheduler", 0.0) + own - own0
                per["task workers"] = per.get("task workers", 0.0) + (total - own) - (total0 - own0)
            else:
                per[name] = per.get(name, 0.0) + total - total0
        watch.cpu = per
        if stop.wait(CPU_EVERY_S):
            return


# ---------------------------------------------------------------------------- replica load
class ReplicaCounters:
    """MariaDB's own per-user statistics for the platform's read-only user."""

    COLUMNS = ("SELECT_COMMANDS", "OTHER_COMMANDS", "BUSY_TIME", "CPU_TIME", "ROWS_READ", "TOTAL_CONNECTIONS")

    def __init__(self, settings, user: str):
        from retail_platform.sandbox.mariadb import LocalMariaDB
        from retail_platform.sandbox.settings import SandboxSettings

        self.mariadb = LocalMariaDB.from_settings(SandboxSettings.from_env())
        self.user = user
        conn = self.mariadb.root_connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET GLOBAL userstat = 1")
        finally:
            conn.close()

    def read(self) -> dict[str, float]:
        conn = self.mariadb.root_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT {', '.join(self.COLUMNS)} FROM information_schema.USER_STATISTICS WHERE USER = %s",
                    (self.user,),
                )
                row = cur.fetchone()
                cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_select')")
                status = {k: float(v) for k, v in cur.fetchall()}
        finally:
            conn.close()
        values = (
            dict(zip(self.COLUMNS, map(float, row), strict=True)) if row else dict.fromkeys(self.COLUMNS, 0.0)
        )
        return values | {f"server_{k}": v for k, v in status.items()}


# ---------------------------------------------------------------------------- Airflow's metadata
def metadata_engine():
    from sqlalchemy import create_engine

    from retail_platform.sandbox.stack import Stack, airflow_metadata_url

    return create_engine(airflow_metadata_url(Stack.from_env()), pool_pre_ping=True)


@dataclass
class Task:
    task_id: str
    map_index: int
    state: str | None
    queued: datetime | None
    start: datetime | None
    end: datetime | None


@dataclass
class Run:
    dag_id: str
    run_id: str
    state: str
    queued: datetime | None
    start: datetime | None
    end: datetime | None
    tasks: list[Task] = field(default_factory=list)

    def task(self, task_id: str) -> list[Task]:
        return [t for t in self.tasks if t.task_id == task_id]


def read_runs(engine, since: datetime) -> list[Run]:
    from sqlalchemy import text

    with engine.connect() as conn:
        runs = {
            (r.dag_id, r.run_id): Run(
                r.dag_id, r.run_id, r.state, aware(r.queued_at), aware(r.start_date), aware(r.end_date)
            )  # fmt: skip
            for r in conn.execute(
                text(
                    "select dag_id, run_id, state, queued_at, start_date, end_date from dag_run "
                    "where dag_id in (:e, :t) and queued_at >= :since order by queued_at"
                ),
                {"e": EXTRACT_DAG, "t": TRANSFORM_DAG, "since": since},
            )
        }
        for r in conn.execute(
            text(
                "select dag_id, run_id, task_id, map_index, state, queued_dttm, start_date, end_date "
                "from task_instance where dag_id in (:e, :t)"
            ),
            {"e": EXTRACT_DAG, "t": TRANSFORM_DAG},
        ):
            run = runs.get((r.dag_id, r.run_id))
            if run is not None:
                run.tasks.append(
                    Task(
                        r.task_id,
                        r.map_index,
                        r.state,
                        aware(r.queued_dttm),
                        aware(r.start_date),
                        aware(r.end_date),
                    )
                )
    return list(runs.values())


def seconds(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else (b - a).total_seconds()


def cycles(runs: list[Run]) -> list[dict]:
    """Each successful transform run with the extraction that triggered it (the latest one ended by
    the transform run's creation): extraction start -> marts published, and its parts."""
    extracts = [r for r in runs if r.dag_id == EXTRACT_DAG and r.state == "success" and r.end]
    found = []
    for run in (r for r in runs if r.dag_id == TRANSFORM_DAG and r.state == "success"):
        published = run.task("publish_warehouse")
        build = run.task("build_warehouse")
        if not (published and build and published[0].end and run.queued):
            continue
        triggering = [e for e in extracts if e.end <= run.queued + timedelta(seconds=5)]
        if not triggering:
            continue
        extract = triggering[-1]
        plan = extract.task("plan_batches")
        tables = [t for t in extract.task("extract_table") if t.start and t.end]
        publish = extract.task("publish")
        announce = run.task("announce_demand_spikes")
        extract_tasks = [t for t in extract.tasks if t.start and t.end]
        transform_tasks = [t for t in run.tasks if t.start and t.end]
        found.append(
            {
                "extract_run": extract.run_id,
                "transform_run": run.run_id,
                "extract_start": extract.start,
                "published": published[0].end,
                "cycle_s": seconds(extract.start, published[0].end),
                "extract_s": seconds(extract.start, extract.end),
                "plan_s": seconds(plan[0].start, plan[0].end) if plan else None,
                "tables_s": seconds(min(t.start for t in tables), max(t.end for t in tables))
                if tables
                else None,
                "extract_publish_s": seconds(publish[0].start, publish[0].end) if publish else None,
                "handover_s": seconds(extract.end, build[0].start),  # asset event -> transform run -> task
                "build_s": seconds(build[0].start, build[0].end),
                "publish_s": seconds(published[0].start, published[0].end),
                "announce_end_s": seconds(published[0].end, announce[0].end)
                if announce and announce[0].end
                else None,
                # Time in tasks' own processes vs. waiting for Airflow to start them.
                "extract_busy_s": union_s([(t.start, t.end) for t in extract_tasks]),
                "transform_busy_s": union_s([(t.start, t.end) for t in transform_tasks]),
            }
        )
    return found


def union_s(spans: list[tuple[datetime, datetime]]) -> float:
    total, end = 0.0, None
    for a, b in sorted(spans):
        if end is None or a > end:
            total += (b - a).total_seconds()
            end = b
        elif b > end:
            total += (b - end).total_seconds()
            end = b
    return total


# ---------------------------------------------------------------------------- the run
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="prod")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--schedule", default="*/2 * * * *", help="RETAIL_EXTRACT_SCHEDULE for the run")
    parser.add_argument("--rate", type=float, default=1.0, help="live orders a second")
    parser.add_argument("--spike-every", type=float, default=12.0, metavar="MINUTES")
    parser.add_argument("--state-dir", default=str(ROOT / ".state" / "bench-freshness"))
    parser.add_argument("--port", type=int, help="Airflow's port (default: a free one)")
    parser.add_argument("--reuse-source", action="store_true", help="keep a source already seeded")
    parser.add_argument(
        "--seed-only", action="store_true", help="seed the source and stop (for --reuse-source)"
    )
    parser.add_argument("--full", action="store_true", help="with Superset and the serving side")
    parser.add_argument("--smoke", action="store_true", help="tiny: classic preset, 1-minute cron, 3 minutes")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.preset, args.minutes, args.schedule = "classic", min(args.minutes, 3), "* * * * *"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    for name in [n for n in os.environ if n.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))]:
        del os.environ[name]  # always the benchmark's own servers and Airflow
    os.environ.update(
        RETAIL_STATE_DIR=str(state),
        RETAIL_AIRFLOW_PORT=str(port),
        RETAIL_EXTRACT_SCHEDULE=args.schedule,
    )
    for name in ("RETAIL_LAKE_URI", "RETAIL_DUCKDB_PATH", "RETAIL_ALERTS_FILE", "AIRFLOW_HOME"):
        os.environ.pop(name, None)  # the state folder's own
    from retail_platform.sandbox.generator.live import read_live_spikes
    from retail_platform.sandbox.seed import sandbox_source
    from retail_platform.sandbox.supervisor import Supervisor
    from retail_platform.settings import Settings

    settings = Settings.from_env()
    if Supervisor(state).manages("airflow-scheduler"):
        raise SystemExit(f"a platform already runs in {state}: `./platform down` it first")
    for leftover in ("lake", "warehouse", "airflow", "alerts", "stack"):
        shutil.rmtree(state / leftover, ignore_errors=True)  # each run measures a first start
    seed(args, settings)
    if args.seed_only:
        return 0
    reader, admin = sandbox_source(settings)
    truth_dir = settings.ground_truth_dir / admin.database
    (truth_dir / "live_spikes.jsonl").unlink(missing_ok=True)
    source = Source(admin)
    first_live = source.max_order()  # orders above this number are the run's live orders
    (state / "logs").mkdir(parents=True, exist_ok=True)
    platform = Platform(dict(os.environ), state / "logs" / "benchmark-platform.log")
    up_args = ["up", "--live", f"{args.rate:g}", "--spike-every", f"{args.spike_every:g}"]
    if not args.full:
        up_args += ["--no-dashboard", "--no-serving"]
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))
    up_began = utcnow()
    print(
        f"{up_began:%H:%M:%S} ./platform {' '.join(up_args)} (log {platform.log})",
        file=sys.stderr,
        flush=True,
    )
    watch, stop, threads = Watch(), threading.Event(), []
    try:
        platform.run(*up_args, timeout=1200)
        started = utcnow()
        up_s = (started - up_began).total_seconds()
        print(f"{started:%H:%M:%S} the platform is up ({up_s:.0f} s); measuring", file=sys.stderr, flush=True)
        supervisor = Supervisor(state)
        replica = ReplicaCounters(settings, reader.user)
        counters0 = replica.read()
        for target, *extra in (
            (watch_alerts, settings),
            (watch_rising, settings),
            (watch_cpu, supervisor),
        ):
            thread = threading.Thread(target=target, args=(*extra, watch, stop), daemon=True)
            thread.start()
            threads.append(thread)
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(AGE_EVERY_S)
            now = utcnow()
            placed = source.orders_after(first_live)
            shown = published_orders_after(settings, first_live) if placed else None
            if not placed or shown is None or not shown:
                continue  # no build with live orders yet: the first build holds the preset's history
            missing = [ts for n, ts in placed.items() if n not in shown]
            complete_until = min(missing) if missing else max(placed.values())
            age = max(0.0, (now - complete_until).total_seconds())
            watch.ages.append((now, age))
            print(
                f"{now:%H:%M:%S} data age {age / 60:.1f} min; {len(watch.alerts)} spikes alerted, "
                f"{len(watch.rising)} shown rising",
                file=sys.stderr,
                flush=True,
            )
        ended = utcnow()
        counters1 = replica.read()
        runs = read_runs(metadata_engine(), started - timedelta(minutes=30))
        # The live generator's spikes of this run (not a spike the seeding placed in the history).
        spikes = [
            s
            for s in read_live_spikes(truth_dir)
            if s["spike_id"].startswith("live-")
            and aware(datetime.fromisoformat(s["started_at"])) >= up_began
        ]
        detectable = {s["spike_id"]: source.spike_detectable_at(s) for s in spikes}
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        source.close()
        try:
            platform.run("down", timeout=300)
        except Exception as exc:
            print(f"./platform down: {exc}", file=sys.stderr)
    result = summarise(args, watch, runs, spikes, detectable, counters0, counters1, started, ended, up_s)
    print(json.dumps(result, indent=2, default=str))
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


def summarise(
    args, watch: Watch, runs, spikes, detectable, counters0, counters1, started, ended, up_s
) -> dict:
    wall_s = (ended - started).total_seconds()
    measured = [c for c in cycles(runs) if c["extract_start"] >= started - timedelta(seconds=5)]
    all_cycles = cycles(runs)
    steady = measured or all_cycles[1:]
    parts = ("extract_s", "plan_s", "tables_s", "extract_publish_s", "handover_s", "build_s", "publish_s")
    spike_rows = []
    for spike in spikes:
        key = (spike["product_code"], spike["country"])
        at = detectable.get(spike["spike_id"])
        alerted, shown = watch.alerts.get(key), watch.rising.get(key)
        spike_rows.append(
            {
                "spike_id": spike["spike_id"],
                "started_at": spike["started_at"],
                "detectable_at": at,
                "alerted_at": alerted,
                "alerts_received": watch.alert_count.get(key, 0),
                "shown_rising_at": shown,
                "to_alert_s": seconds(at, alerted)
                if at and alerted and alerted >= at - timedelta(minutes=5)
                else None,
                "to_dashboard_s": seconds(at, shown) if at and shown else None,
            }
        )
    minutes = wall_s / 60
    delta = {k: counters1.get(k, 0.0) - counters0.get(k, 0.0) for k in counters1}
    statements = delta.get("SELECT_COMMANDS", 0.0) + delta.get("OTHER_COMMANDS", 0.0)
    failed = [(r.dag_id, r.run_id) for r in runs if r.state == "failed"]
    ages = [a for _, a in watch.ages]
    return {
        "preset": args.preset,
        "schedule": args.schedule,
        "minutes": round(minutes, 1),
        "live_rate_per_s": args.rate,
        "spike_every_min": args.spike_every,
        "started": started.isoformat(),
        "up_s": round(up_s, 1),
        "with_dashboard_and_serving": args.full,
        "data_age_s": spread(ages),
        "cycles_measured": len(measured),
        "initial_cycle_s": all_cycles[0]["cycle_s"] if all_cycles else None,
        "steady_cycle_s_median": statistics.median([c["cycle_s"] for c in steady]) if steady else None,
        "steady_cycle_s_max": max((c["cycle_s"] for c in steady), default=None),
        "cycle_parts_median_s": {
            p: statistics.median(vals) if (vals := [c[p] for c in steady if c[p] is not None]) else None
            for p in parts
        },
        "cycle_busy_share": (
            sum(c["extract_busy_s"] + c["transform_busy_s"] for c in steady)
            / sum(c["cycle_s"] for c in steady)
            if steady
            else None
        ),
        "extract_runs": sum(1 for r in runs if r.dag_id == EXTRACT_DAG and r.state == "success"),
        "transform_runs": sum(1 for r in runs if r.dag_id == TRANSFORM_DAG and r.state == "success"),
        "failed_runs": failed,
        "spikes": spike_rows,
        "spike_to_alert_s": spread([r["to_alert_s"] for r in spike_rows if r["to_alert_s"] is not None]),
        "spike_to_dashboard_s": spread(
            [r["to_dashboard_s"] for r in spike_rows if r["to_dashboard_s"] is not None]
        ),
        "spikes_alerted_twice": [r["spike_id"] for r in spike_rows if r["alerts_received"] > 1],
        "replica": {
            "statements_per_min": statements / minutes if minutes else None,
            "selects_per_min": delta.get("SELECT_COMMANDS", 0.0) / minutes if minutes else None,
            "busy_s_per_min": delta.get("BUSY_TIME", 0.0) / minutes if minutes else None,
            "cpu_s_per_min": delta.get("CPU_TIME", 0.0) / minutes if minutes else None,
            "rows_read_per_min": delta.get("ROWS_READ", 0.0) / minutes if minutes else None,
            "connections_per_min": delta.get("TOTAL_CONNECTIONS", 0.0) / minutes if minutes else None,
            "server_questions_per_min": delta.get("server_Questions", 0.0) / minutes if minutes else None,
        },
        "cpu_share_of_one_core": {k: round(v / wall_s, 3) for k, v in sorted(watch.cpu.items())},
        "cores": len(os.sched_getaffinity(0)),
        "cycles": [{k: v for k, v in asdict_safe(c).items()} for c in measured],
    }


def asdict_safe(value) -> dict:
    return asdict(value) if hasattr(value, "__dataclass_fields__") else dict(value)


def print_table(r: dict) -> None:
    def m(v):
        return "n/a" if v is None else f"{v / 60:.1f}"

    def s(v):
        return "n/a" if v is None else f"{v:.0f}"

    age, alert, shown = r["data_age_s"], r["spike_to_alert_s"], r["spike_to_dashboard_s"]
    parts = r["cycle_parts_median_s"]
    print(
        "\n| schedule | run | data age median / p99 / max (min) | cycle median / max (s) | "
        "extract / hand-over / build / publish, median (s) | spike → alert p50 / p95 / max (min) | "
        "→ rising on the dashboard p50 / p95 / max (min) | replica statements/min (busy s/min) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| `{r['schedule']}` | {r['preset']}, {r['minutes']:g} min, {age['n']} samples, "
        f"{r['cycles_measured']} cycles | {m(age['median'])} / {m(age['p99'])} / {m(age['max'])} | "
        f"{s(r['steady_cycle_s_median'])} / {s(r['steady_cycle_s_max'])} | "
        f"{s(parts['extract_s'])} / {s(parts['handover_s'])} / {s(parts['build_s'])} / {s(parts['publish_s'])} | "
        f"{m(alert['median'])} / {m(alert['p95'])} / {m(alert['max'])} ({alert['n']} spikes) | "
        f"{m(shown['median'])} / {m(shown['p95'])} / {m(shown['max'])} | "
        f"{s(r['replica']['statements_per_min'])} ({(r['replica']['busy_s_per_min'] or 0):.2f}) |"
    )
    print("\n| part | CPU, share of one core |\n|---|---:|")
    for name, share in r["cpu_share_of_one_core"].items():
        print(f"| {name} | {share:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
