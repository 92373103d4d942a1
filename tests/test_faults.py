"""Fault injection: each fault the platform must survive, with what it does and what is asserted.

Every test injects a real fault (a connection kept only in Airflow's metadata database, bad data at
the source, a rerun after updates, a malformed or wrong connection, an invalid contract, a replica
that goes away mid-read, a locked or killed warehouse build, a full disk, a failing Slack webhook,
a failing Glue job) and asserts that nothing already stored was lost or became half-visible. The
README's reliability table lists them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pendulum
import pytest
import yaml
from faultkit import FullDisk, SlackReceiver, TcpProxy
from interval_support import hour_interval

from retail_platform.contract.model import load_contract
from retail_platform.extract.local_engine import ExtractionError, extract_batch
from retail_platform.extract.plan import plan_extraction
from retail_platform.extract.reconcile import ReconciliationError
from retail_platform.extract.runner import plan_run
from retail_platform.lake.batches import RawLake, lake_for
from retail_platform.lake.storage import LakeStorage
from retail_platform.settings import Settings
from retail_platform.source.introspect import read_live_schema

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_PATH = ROOT / "include" / "contracts" / "classicmodels.yml"
CONTRACT = load_contract(CONTRACT_PATH)
REPLICA_VAR = "AIRFLOW_CONN_CLASSICMODELS_REPLICA"


def extract_all(reader, lake: RawLake, start, end, *, tables=None) -> dict:
    plans = plan_extraction(
        CONTRACT, read_live_schema(reader), interval_start=start, interval_end=end, tables=tables
    )
    return {p.table: extract_batch(p, reader=reader, lake=lake) for p in plans}


def staged_keys(lake: RawLake, table: str) -> set:
    data = lake.read_table(table)
    key = CONTRACT.tables[table].primary_key
    return set(zip(*(data.column(k).to_pylist() for k in key), strict=True))


def extract_dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags" / "extract_replica.py")).get_dag("extract_classicmodels")


def task_instance(run, task_id: str):
    (ti,) = [ti for ti in run.get_task_instances() if ti.task_id == task_id]
    return ti


def alerts(settings: Settings) -> list[dict]:
    from retail_platform.alerts import read_alerts

    return read_alerts(settings)


@pytest.fixture
def own_lake(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("RETAIL_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("RETAIL_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    return Settings.from_env()


# ---------------------------------------------------------------- 1. production never runs on the sandbox


def _private_servers(state_dir: Path) -> set[tuple[int, str]]:
    """The MariaDB servers (pid, data directory) whose data directory lies under ``state_dir``: a
    private server the platform would start goes there. Servers of other state folders (other
    checkouts, other test sessions on this machine) are not counted."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # ended meanwhile
            continue
        if not argv or Path(argv[0]).name != "mariadbd":
            continue
        datadir = next((a.split("=", 1)[1] for a in argv if a.startswith("--datadir=")), None)
        if datadir and Path(datadir).resolve().is_relative_to(state_dir.resolve()):
            found.add((int(proc.name), datadir))
    return found


def test_a_connection_kept_in_airflows_metadata_database_is_used(
    seed_scratch, reader, airflow_db, own_lake, monkeypatch
):
    """Fault 1: the replica's connection lives in Airflow's metadata database, not the environment.
    The extraction reads that source (a database with other data than the sandbox's), and no
    private server is started."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    db = seed_scratch("metastore", scale=0.5)
    source = reader.with_database(db.database)
    monkeypatch.delenv(REPLICA_VAR)
    with create_session() as session:
        session.add(
            Connection(
                conn_id="classicmodels_replica",
                conn_type="mysql",
                host=source.host,
                port=source.port,
                login=source.user,
                password=source.password,
                schema=source.database,
            )
        )
    servers = _private_servers(Settings.from_env().state_dir)
    assert servers, "the check sees the test session's own MariaDB under the state folder"
    try:
        run = extract_dag().test(logical_date=pendulum.datetime(2026, 11, 30, 10, tz="UTC"))
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "classicmodels_replica").delete()
    assert run.state == "success"
    assert _private_servers(Settings.from_env().state_dir) == servers, "no private MariaDB was started"
    orders = lake_for(own_lake, "classicmodels").committed_batches("orders")[0]
    from conftest import SQLRunner

    # Half the classic preset: 163 orders (the sandbox's classicmodels has 326).
    assert orders["row_count"] == SQLRunner().query(source, "SELECT COUNT(*) FROM orders")[0][0] == 163


def test_a_missing_connection_fails_at_once_and_names_it(mariadb, airflow_db, own_lake, monkeypatch):
    monkeypatch.delenv(REPLICA_VAR)
    run = extract_dag().test(logical_date=pendulum.datetime(2026, 11, 30, 11, tz="UTC"))
    plan = task_instance(run, "plan_batches")
    assert (run.state, plan.state, plan.try_number) == ("failed", "failed", 1), "no retries"
    (alert,) = alerts(own_lake)
    assert alert["kind"] == "configuration_error" and "not an outage" in alert["title"]
    assert "connection 'classicmodels_replica' is not configured" in alert["text"]
    assert REPLICA_VAR in alert["text"] and "metadata database" in alert["text"]


# ---------------------------------------------------------------- 4. configuration errors fail fast


def _bad_contract(tmp_path: Path) -> str:
    doc = yaml.safe_load(CONTRACT_PATH.read_text())
    doc["tables"]["customers"]["extraction"]["cursor"] = "updated_att"
    folder = tmp_path / "contracts"
    folder.mkdir()
    (folder / "classicmodels.yml").write_text(yaml.safe_dump(doc))
    return str(folder)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("port typo", "is malformed: Port could not be cast to integer value as '33o6'"),
        ("wrong password", "was refused: Access denied for user 'retail_reader'"),
        ("closed port", "which has never answered"),
        ("invalid contract", "tables.customers: extraction.cursor: column 'updated_att' is not in columns"),
    ],
)
def test_a_configuration_error_fails_at_once_with_one_configuration_alert(
    mariadb, airflow_db, own_lake, monkeypatch, tmp_path, fault, expected
):
    reader = mariadb.connection("reader")
    bad = {
        "port typo": (REPLICA_VAR, reader.url().replace(f":{reader.port}/", ":33o6/")),
        "wrong password": (REPLICA_VAR, reader.url().replace(f":{reader.password}@", ":wrong@")),
        "closed port": (REPLICA_VAR, reader.url().replace(f":{reader.port}/", f":{TcpProxy._free_port()}/")),
        "invalid contract": ("RETAIL_CONTRACTS_DIR", _bad_contract(tmp_path)),
    }
    monkeypatch.setenv(*bad[fault])
    run = extract_dag().test(logical_date=pendulum.datetime(2026, 11, 30, 12, tz="UTC"))
    plan = task_instance(run, "plan_batches")
    assert (plan.state, plan.try_number) == ("failed", 1), "a configuration error is not retried"
    (alert,) = alerts(own_lake)  # one alert, and the failure callback did not crash building it
    assert alert["kind"] == "configuration_error" and "not an outage" in alert["title"]
    assert expected in alert["text"]
    assert reader.password not in json.dumps(alert)


def test_an_outage_of_a_replica_that_answered_before_is_retried_and_announced_once(
    mariadb, airflow_db, own_lake, monkeypatch
):
    """A refused connection to a replica that answered before is an outage: retried with backoff,
    then announced once as stale data (not as a configuration problem)."""
    reader = mariadb.connection("reader")
    proxy = TcpProxy(reader.host, reader.port)
    monkeypatch.setenv(REPLICA_VAR, reader.url().replace(f":{reader.port}/", f":{proxy.port}/"))
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    plan_run(Settings.from_env(), "classicmodels", end - timedelta(hours=1), end)  # it answered once
    proxy.down()
    try:
        dag = extract_dag()
        # retries lowered: one quick retry shows an outage is retried, without minutes of backoff;
        # the shipped backoff is bounded by the retry-budget test, and the other extraction DAG runs
        # here use the shipped policy.
        for task in dag.tasks:
            task.retries, task.retry_delay, task.max_retry_delay = 0, timedelta(seconds=1), None
        dag.get_task("plan_batches").retries = 1  # retries lowered: as above
        run = dag.test(logical_date=pendulum.datetime(2026, 11, 30, 13, tz="UTC"))
    finally:
        proxy.close()
    plan = task_instance(run, "plan_batches")
    assert (plan.state, plan.try_number) == ("failed", 2), "an outage is retried"
    (alert,) = alerts(own_lake)
    assert alert["kind"] == "source_outage" and "data will be stale" in alert["title"]


def worst_retry_delay(task, try_number: int) -> timedelta:
    """The longest wait Airflow can draw after try ``try_number`` fails (TaskInstance.
    next_retry_datetime): with exponential backoff the wait is ``min_backoff + hash % min_backoff``
    for a hash that varies with the run, so at most ``2 * min_backoff - 1`` seconds, then capped."""
    import math

    from airflow.sdk.definitions._internal.abstractoperator import MAX_RETRY_DELAY

    multiplier = task.retry_exponential_backoff or 1.0
    if multiplier == 1.0:
        return task.retry_delay
    min_backoff = max(1, math.ceil(task.retry_delay.total_seconds() * multiplier ** (try_number - 1)))
    worst = timedelta(seconds=min(2 * min_backoff - 1, MAX_RETRY_DELAY))
    return min(task.max_retry_delay, worst) if task.max_retry_delay else worst


def worst_case_retry_time(task) -> timedelta:
    return sum((worst_retry_delay(task, n) for n in range(1, task.retries + 1)), timedelta())


def test_worst_case_retry_time_of_every_dag_stays_well_inside_the_shortest_schedule(dagbag):
    """All retries with the longest backoff Airflow can draw (the maximum over its jitter), for every
    task of every DAG: at most 5 minutes, half the shortest extraction interval we recommend. The
    bound is checked against Airflow's own computation over many runs' jitter draws."""
    from airflow.models.taskinstance import TaskInstance

    worst = {}
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            worst[f"{dag.dag_id}.{task.task_id}"] = worst_case_retry_time(task)
            for try_number in range(1, task.retries + 1):
                bound = worst_retry_delay(task, try_number)
                for day in range(1, 41):  # the jitter varies with the logical date
                    ti = TaskInstance(task, run_id="r", dag_version_id=None)
                    ti.try_number, ti.end_date = try_number, datetime(2026, 1, 1, tzinfo=UTC)
                    ti.logical_date = datetime(2026, 1, day % 28 + 1, day % 24, tzinfo=UTC)
                    assert ti.next_retry_datetime() - ti.end_date <= bound, (task.task_id, try_number)
    assert max(worst.values()) <= timedelta(minutes=5), worst


# ---------------------------------------------------------------- 3. reruns never lose rows


def test_a_rerun_of_the_latest_interval_after_updates_keeps_every_key(sql, reader, seed_scratch, tmp_path):
    """Fault 3: customers updated after the interval's batch was written move past its old upper bound;
    the rerun reads to now and keeps all of them, with their new values."""
    db = seed_scratch("rerun", fresh=True)
    source = reader.with_database(db.database)
    lake = RawLake(LakeStorage.from_uri(str(tmp_path / "lake")), "classicmodels")
    interval = hour_interval()
    extract_all(source, lake, *interval, tables=["customers"])
    sql.execute(db, "UPDATE customers SET creditLimit = creditLimit + 1 WHERE customerNumber % 4 = 0")
    again = extract_all(source, lake, *interval, tables=["customers"])["customers"]
    keys = {(n,) for (n,) in sql.query(source, "SELECT customerNumber FROM customers")}
    assert staged_keys(lake, "customers") == keys and len(keys) == 122
    assert again["row_count"] == 122
    latest = {r["customerNumber"]: r["creditLimit"] for r in lake.read_table("customers").to_pylist()}
    assert latest == {n: c for n, c in sql.query(source, "SELECT customerNumber, creditLimit FROM customers")}


def test_reconciliation_refuses_a_rewrite_that_drops_keys_the_source_has(
    sql, reader, seed_scratch, tmp_path, monkeypatch
):
    """The same rerun with the old rule (the first run's upper bound) would drop the updated customers:
    the rewrite is refused, naming the table and keys, and the committed batch stays."""
    from retail_platform.extract import bounds, skeleton

    db = seed_scratch("rerun_guard", fresh=True)
    source = reader.with_database(db.database)
    lake = RawLake(LakeStorage.from_uri(str(tmp_path / "lake")), "classicmodels")
    interval = hour_interval()
    first = extract_all(source, lake, *interval, tables=["customers"])["customers"]
    sql.execute(db, "UPDATE customers SET creditLimit = creditLimit + 1 WHERE customerNumber % 4 = 0")
    real = bounds.resolve_bounds

    def old_rule(plan, **kwargs):
        return real(plan, **(kwargs | {"source_now": None}))  # reuse the first run's range as it was

    monkeypatch.setattr(skeleton, "resolve_bounds", old_rule)
    with pytest.raises(ReconciliationError, match=r"customers: rewriting batch .* would drop \d+ keys"):
        extract_all(source, lake, *interval, tables=["customers"])
    assert lake.committed_batches("customers")[0]["attempt"] == first["attempt"]
    assert len(staged_keys(lake, "customers")) == 122


# ---------------------------------------------------------------- replica down mid-extraction; disk full


def committed_state_is_whole(lake: RawLake, table: str) -> None:
    from test_extraction import committed_state_is_whole as check

    check(lake, table)


def test_the_replica_going_away_mid_extraction_commits_nothing_half(reader, seed_scratch, tmp_path):
    db = seed_scratch("kill", preset="prod", scale=0.03)
    source = reader.with_database(db.database)
    lake = RawLake(LakeStorage.from_uri(str(tmp_path / "lake")), "classicmodels")
    interval = hour_interval()
    before = extract_all(source, lake, *interval, tables=["orderdetails"])["orderdetails"]
    proxy = TcpProxy(source.host, source.port)
    through = dataclasses.replace(source, port=proxy.port)
    proxy.cut_after(200_000)  # bytes back from the server: well into the stream
    try:
        with pytest.raises(
            ExtractionError, match="orderdetails: (reading from the replica|the replica failed)"
        ):
            extract_all(through, lake, *interval, tables=["orderdetails"])
    finally:
        proxy.close()
    committed_state_is_whole(lake, "orderdetails")
    (kept,) = lake.committed_batches("orderdetails")
    assert kept["attempt"] == before["attempt"], "the committed batch is untouched"
    again = extract_all(source, lake, *interval, tables=["orderdetails"])["orderdetails"]
    assert again["row_count"] == before["row_count"]
    committed_state_is_whole(lake, "orderdetails")


def full_disk_lake(root: Path) -> tuple[LakeStorage, FullDisk]:
    """A lake on a disk that can fill up (an ENOSPC-raising filesystem: no privileges needed)."""
    import pyarrow.fs as pafs

    disk = FullDisk()
    return LakeStorage(str(root), pafs.PyFileSystem(disk), str(root), is_local=True), disk


def test_a_full_disk_while_writing_a_batch_leaves_the_lake_whole(reader, seed_scratch, tmp_path):
    """The disk fills while orderdetails is written: a storage fault no retry heals (not an outage),
    naming the table; nothing of it is committed, the batch before it stays whole, and once there is
    space again the same interval extracts and reconciles."""
    from retail_platform.errors import StorageUnusable

    db = seed_scratch("kill", preset="prod", scale=0.03)
    source = reader.with_database(db.database)
    storage, disk = full_disk_lake(tmp_path / "lake")
    lake = RawLake(storage, "classicmodels")
    interval = hour_interval()
    disk.full = False
    offices = extract_all(source, lake, *interval, tables=["offices"])["offices"]
    disk.full = True
    with pytest.raises(StorageUnusable, match="orderdetails: the lake cannot be written.*No space left"):
        extract_all(source, lake, *interval, tables=["orderdetails"])
    assert disk.refused, "the write met the full disk"
    assert lake.committed_batches("orderdetails") == []
    assert lake.committed_batches("offices") == [lake.read_manifest("offices", offices["batch_id"])]
    committed_state_is_whole(lake, "offices")
    disk.full = False
    again = extract_all(source, lake, *interval, tables=["orderdetails"])["orderdetails"]
    assert again["reconciliation"]["status"] == "ok"
    committed_state_is_whole(lake, "orderdetails")


@pytest.fixture(scope="module")
def seeded_source(mariadb):
    """The test instance's own `classicmodels` (the DAGs' default source), whatever ran before."""
    from retail_platform.sandbox.seed import seed_source

    seed_source(preset="classic", replace=True)
    return mariadb


def _all_tried_once(run) -> dict:
    tries = {(ti.task_id, ti.map_index): (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert all(n <= 1 for _, n in tries.values()), f"retried: {tries}"
    return tries


def test_a_full_lake_fails_the_extraction_once_with_one_alert_naming_every_table(
    seeded_source, airflow_db, own_lake, monkeypatch
):
    """The lake's disk is full while batches are written. The extraction DAG, with the retry policy
    it ships with: every table fails on its first try (no retries: the disk stays full), silently,
    and publish tells it once, as a configuration problem naming the cause and every table."""
    import pyarrow.fs as pafs

    disk = FullDisk()
    real = LakeStorage.from_uri.__func__

    def on_a_full_disk(cls, uri, **kwargs):
        storage = real(cls, uri, **kwargs)
        return dataclasses.replace(storage, fs=pafs.PyFileSystem(disk))

    monkeypatch.setattr(LakeStorage, "from_uri", classmethod(on_a_full_disk))
    run = extract_dag().test(logical_date=pendulum.datetime(2026, 11, 30, 15, tz="UTC"))
    tries = _all_tried_once(run)
    assert run.state == "failed" and tries[("publish", -1)] == ("failed", 1)
    assert sorted(s for (t, _), (s, _) in tries.items() if t == "extract_table") == ["failed"] * 9
    (alert,) = alerts(own_lake)
    assert alert["kind"] == "configuration_error" and "No space left on device" in alert["text"]
    assert all(table in alert["text"] for table in CONTRACT.tables), alert["text"]
    assert lake_for(own_lake, "classicmodels").committed_batches("orders") == []


def test_a_read_only_lake_fails_the_extraction_once_with_one_alert(
    seeded_source, airflow_db, own_lake, tmp_path
):
    """The lake is mounted read-only (a bind mount in a mount namespace of its own: root ignores
    chmod). `airflow dags test` of the extraction inside it: one try, one alert naming the cause and
    every table, a failed run."""
    import shutil

    from airflow.models.dagrun import DagRun

    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to mount the lake read-only")
    lake = Path(own_lake.lake_uri)
    lake.mkdir(parents=True)
    airflow = str(Path(sys.executable).parent / "airflow")
    script = (
        'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && touch "$1/x" 2>/dev/null '
        '&& exit 97; exec "$2" dags test extract_classicmodels 2026-11-30T16:00:00+00:00'
    )
    done = subprocess.run(
        # Not root: a user namespace of its own (-r) lets the test mount without privileges.
        ["unshare", *([] if os.geteuid() == 0 else ["-r"]), "-m", "--propagation", "private"]
        + ["sh", "-c", script, "sh", str(lake), airflow],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 97, "the lake was still writable"
    (run,) = DagRun.find(
        dag_id="extract_classicmodels", logical_date=pendulum.datetime(2026, 11, 30, 16, tz="UTC")
    )
    assert run.state == "failed", done.stdout[-3000:] + done.stderr[-3000:]
    _all_tried_once(run)
    (alert,) = alerts(own_lake)
    assert alert["kind"] == "configuration_error" and "Read-only file system" in alert["text"]
    assert all(table in alert["text"] for table in CONTRACT.tables), alert["text"]
    assert not any(lake.iterdir()), "nothing was written"


# ---------------------------------------------------------------- 2. write-audit-publish of the warehouse


@pytest.fixture(scope="module")
def warehouse(reader, seed_scratch, tmp_path_factory):
    """A published warehouse over its own scratch source (classic preset), and that source."""
    db = seed_scratch("wap", fresh=True)
    source = reader.with_database(db.database)
    tmp = tmp_path_factory.mktemp("wap")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETAIL_LAKE_URI", str(tmp / "lake"))
        mp.setenv("RETAIL_DUCKDB_PATH", str(tmp / "warehouse" / "retail.duckdb"))
        mp.setenv("RETAIL_ALERTS_FILE", str(tmp / "alerts.jsonl"))
        settings = Settings.from_env()
        extract_all(source, lake_for(settings, "classicmodels"), *hour_interval(2))
        assert build_in_child().returncode == 0
        yield settings, db, source, mp


BUILD_CHILD = (
    "import sys\n"
    "from retail_platform.settings import Settings\n"
    "from retail_platform.warehouse.transform import build_and_publish\n"
    "print('ready', file=sys.stderr, flush=True)\n"
    "build_and_publish(Settings.from_env())\n"
    "print('done', file=sys.stderr, flush=True)\n"
)


def wait_for(child: subprocess.Popen, marker: str) -> None:
    for line in child.stderr:
        if line.strip() == marker:
            return
    raise AssertionError(f"the build child ended before printing {marker!r}")


def build_in_child(**options) -> subprocess.Popen | subprocess.CompletedProcess:
    """A warehouse build in a process of its own, as a transform task runs (DuckDB's file lock is the
    process's: builds in this test process would share one database instance with each other)."""
    command = [sys.executable, "-c", BUILD_CHILD]
    if options.get("background"):
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


MARTS = (
    "analytics.fct_order_lines",
    "analytics.fct_orders",
    "analytics.fct_popular_products_7d",
    "analytics.fct_hourly_demand",
    "ml.ratings_ml_training",
)


def published(settings: Settings) -> tuple[str, dict]:
    """Which snapshot readers see, and every mart's content digest there."""
    from retail_platform.warehouse.snapshots import published_build_id, read_only

    with read_only(settings) as conn:
        digests = {m: conn.execute(f"select count(*), sum(hash(m)) from {m} as m").fetchone() for m in MARTS}
    return published_build_id(settings), digests


def transform_dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags" / "transform_warehouse.py")).get_dag("transform_warehouse")


def asset_events(run) -> list:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run.run_id)).all()


def new_alerts(settings: Settings, before: int) -> list[dict]:
    return alerts(settings)[before:]


NOT_RUN = {None, "upstream_failed"}  # never started (`dag.test` leaves them without a state)


def test_a_locked_build_file_fails_the_run_with_one_alert_not_the_readers(warehouse, airflow_db, monkeypatch):
    """Another process holds DuckDB's lock on the build file. The transform DAG, with the retry
    policy it ships with, waits for it (RETAIL_WAREHOUSE_LOCK_WAIT_S), then fails once: one alert
    naming the lock's holder, nothing published, no Asset event; readers keep reading meanwhile, and
    the next build passes."""
    from retail_platform.warehouse.snapshots import build_path, read_only

    settings = warehouse[0]
    monkeypatch.setenv("RETAIL_WAREHOUSE_LOCK_WAIT_S", "2")
    before, said = published(settings), len(alerts(settings))
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(build_path(settings))], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        run = transform_dag().test(logical_date=pendulum.now("UTC"))
        with read_only(settings) as conn:  # a dashboard is never locked out by a build
            assert conn.execute("select count(*) from analytics.fct_order_lines").fetchone()[0] > 0
    finally:
        holder.kill()
        holder.wait()
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert run.state == "failed" and states.pop("build_warehouse") == ("failed", 1), states
    assert {state for state, _ in states.values()} <= NOT_RUN, states
    (alert,) = new_alerts(settings, said)
    assert alert["kind"] == "warehouse_locked" and f"(PID {holder.pid})" in alert["text"]
    assert published(settings) == before and asset_events(run) == []
    assert build_in_child().returncode == 0
    assert published(settings)[1] == before[1] and published(settings)[0] != before[0]


LOCK_HOLDER = (
    "import duckdb, sys, time\nc = duckdb.connect(sys.argv[1])\nprint('locked', flush=True)\ntime.sleep(600)"
)
# Holds the platform's build lock as a build would, naming itself, until killed.
BUILD_LOCK_HOLDER = (
    "import time\n"
    "from retail_platform.settings import Settings\n"
    "from retail_platform.warehouse.build_lock import build_lock\n"
    "with build_lock(Settings.from_env(), holder='the holder build', wait_s=0):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(600)\n"
)


def test_one_build_at_a_time_and_a_killed_holder_never_leaves_the_lock_held(warehouse, monkeypatch):
    """Two builds at once from two processes: the second cannot have the lock within its wait and
    fails naming the holder, having written nothing; a second that waits long enough builds once the
    holder is SIGKILLed (the kernel releases its lock), and publishes."""
    from retail_platform.warehouse.snapshots import build_path

    settings = warehouse[0]
    before = published(settings)
    holder = subprocess.Popen([sys.executable, "-c", BUILD_LOCK_HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        written = build_path(settings).stat().st_mtime_ns
        monkeypatch.setenv("RETAIL_WAREHOUSE_LOCK_WAIT_S", "1")
        refused = build_in_child()
        assert refused.returncode != 0 and "WarehouseBusy" in refused.stderr
        assert f"the holder build (pid {holder.pid} on" in refused.stderr
        assert build_path(settings).stat().st_mtime_ns == written, "the refused build wrote nothing"
        (alert,) = [a for a in alerts(settings) if a["kind"] == "warehouse_busy"]
        assert f"pid {holder.pid}" in alert["text"]
        monkeypatch.setenv("RETAIL_WAREHOUSE_LOCK_WAIT_S", "300")
        waiting = build_in_child(background=True)
        wait_for(waiting, "ready")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert waiting.wait(timeout=600) == 0, waiting.stderr.read()
    assert published(settings)[1] == before[1] and published(settings)[0] != before[0]


# Holds the build lock as try argv[1] of one Airflow task would, until stopped.
TASK_TRY_HOLDER = (
    "import sys, time\n"
    "from retail_platform.settings import Settings\n"
    "from retail_platform.warehouse.build_lock import TaskTry, build_lock\n"
    "attempt = TaskTry('transform_warehouse/run-1/build_warehouse', int(sys.argv[1]))\n"
    "with build_lock(Settings.from_env(), holder='try ' + sys.argv[1], wait_s=0, task_try=attempt):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(600)\n"
)


@pytest.mark.parametrize(
    ("holding_try", "wanting_try", "stopped"), [(1, 2, True), (2, 1, False), (2, 2, False)]
)
def test_a_later_try_of_the_same_task_stops_an_earlier_one_that_holds_the_build_lock(
    tmp_path, monkeypatch, holding_try, wanting_try, stopped
):
    """A scheduler killed mid-build leaves the build's process running unsupervised while Airflow
    retries the task (soak, 2026-12-07: the retry waited 120 s for it and failed the run). The later
    try stops it and takes the lock; an earlier or the same try never stops a holder, it waits."""
    from retail_platform.settings import Settings
    from retail_platform.warehouse.build_lock import TaskTry, WarehouseBusy, build_lock

    monkeypatch.setenv("RETAIL_STATE_DIR", str(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", TASK_TRY_HOLDER, str(holding_try)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        wanting = TaskTry("transform_warehouse/run-1/build_warehouse", wanting_try)
        if stopped:
            with build_lock(Settings.from_env(), holder="the retry", wait_s=2, task_try=wanting):
                assert holder.wait(timeout=30) == -signal.SIGTERM
        else:
            lock = build_lock(Settings.from_env(), holder="the retry", wait_s=2, task_try=wanting)
            with pytest.raises(WarehouseBusy, match=f"try {holding_try} \\(pid {holder.pid}"), lock:
                pass
            assert holder.poll() is None, "a holder that is not an earlier try was stopped"
    finally:
        holder.kill()
        holder.wait()


def test_sigkill_of_the_transform_mid_build_leaves_the_published_marts_whole(warehouse):
    settings = warehouse[0]
    before = published(settings)
    timing = build_in_child(background=True)
    wait_for(timing, "ready")
    started = time.perf_counter()
    wait_for(timing, "done")
    assert timing.wait() == 0
    build_s = time.perf_counter() - started
    rng = random.Random(7)
    for _ in range(3):
        now = published(settings)
        child = build_in_child(background=True)
        wait_for(child, "ready")
        time.sleep(rng.uniform(0.2 * build_s, 0.9 * build_s))
        child.send_signal(signal.SIGKILL)
        child.wait()
        after = published(settings)  # readable, and either the snapshot before or a whole new one
        assert after[1] == before[1] and (after[0] == now[0] or after[0] > now[0])
    assert build_in_child().returncode == 0
    assert published(settings)[1] == before[1]


def test_failed_dbt_tests_never_reach_the_marts(warehouse, sql, airflow_db):
    """Fault 2: an order line with a negative price reaches the source. The transform DAG, with the
    retry policy it ships with, rebuilds the marts with it and fails their tests: the run fails on
    its first try, with one alert naming the failed test and its failing rows; publish, the export
    and the spike announcement never run; readers see exactly the last build that passed, and no
    Asset event goes out. (Last in the module: the line stays in the append-only lake, so every later
    build of this warehouse fails the same way.)"""
    import duckdb

    from retail_platform.warehouse.export import read_latest_export
    from retail_platform.warehouse.snapshots import build_path

    settings, db, source, _ = warehouse
    before, said = published(settings), len(alerts(settings))
    exported = (
        read_latest_export(settings)[0]["build_id"] if (Path(settings.lake_uri) / "ml").exists() else None
    )
    (order,) = sql.query(db, "SELECT MAX(orderNumber) + 1 FROM orders")[0]
    (product,) = sql.query(db, "SELECT MIN(productCode) FROM products")[0]
    sql.execute(
        db,
        "INSERT INTO orders (orderNumber, orderDate, requiredDate, status, customerNumber, orderTimestamp) "
        f"VALUES ({order}, CURDATE(), CURDATE(), 'In Process', 103, NOW())",
        "INSERT INTO orderdetails (orderNumber, productCode, quantityOrdered, priceEach, orderLineNumber) "
        f"VALUES ({order}, '{product}', 2, -5.00, 1)",
    )
    now = datetime.now(UTC)
    extract_all(
        source, lake_for(settings, "classicmodels"), now - timedelta(hours=1), now + timedelta(minutes=1)
    )
    run = transform_dag().test(logical_date=pendulum.now("UTC"))
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert run.state == "failed" and states.pop("build_warehouse") == ("failed", 1), "one try, failed"
    assert {state for state, _ in states.values()} <= NOT_RUN, f"ran after a failed build: {states}"
    with duckdb.connect(str(build_path(settings)), read_only=True) as conn:  # the build has the line...
        assert conn.execute("select min(price_each) from analytics.fct_order_lines").fetchone()[0] < 0
    assert published(settings) == before, "...readers see exactly the last build that passed"
    assert asset_events(run) == [], "no Asset event for a build that did not publish"
    if exported is not None:
        assert read_latest_export(settings)[0]["build_id"] == exported, "no training export"
    (alert,) = new_alerts(settings, said)  # one alert for the run, and no spike announcement
    assert alert["kind"] == "warehouse_build_failed"
    assert alert["details"]["failed_tests"] == {"assert_prices_positive": 1}
    assert "test `assert_prices_positive`: 1 failing rows" in alert["text"]
    assert "keep the last build that passed" in alert["title"]


# ---------------------------------------------------------------- Slack answering 500 or timing out


@pytest.fixture
def slack(monkeypatch):
    receiver = SlackReceiver()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_ALERTS", json.dumps({"conn_type": "slackwebhook", "password": receiver.url})
    )
    monkeypatch.setenv("RETAIL_SLACK_TIMEOUT_S", "1")
    yield receiver
    receiver.close()


@pytest.fixture
def scratch_replica(seed_scratch, reader, own_lake, monkeypatch, dbt_manifest):
    """A fresh scratch source the platform reads as its replica (schema changes stay in it)."""
    db = seed_scratch("slack", fresh=True)
    monkeypatch.setenv(REPLICA_VAR, reader.with_database(db.database).url())
    return db


def _watch(settings):
    from retail_platform.schema_watch.watch import run_watch

    return run_watch(
        settings, "classicmodels", run_url="http://airflow.example/dags/watch_classicmodels_schema/runs/r1"
    )


@pytest.mark.parametrize("fault", ["500", "timeout"])
def test_a_failing_slack_delivery_is_retried_for_that_table_only(scratch_replica, sql, slack, caplog, fault):
    """Two tables changed: Slack fails (500, or hangs past the timeout) on one table's message. The
    task fails; its retry sends only that table's message; nothing is said twice, and no log record
    or error carries the webhook's secret."""
    import logging

    from retail_platform.alerts import AlertDeliveryError
    from retail_platform.schema_watch.notify import notify_changes

    caplog.set_level(logging.DEBUG)
    settings = Settings.from_env()
    _watch(settings)
    sql.execute(
        scratch_replica,
        "ALTER TABLE orders ADD COLUMN channel VARCHAR(20) NULL",
        "ALTER TABLE customers ADD COLUMN segment VARCHAR(20) NULL",
    )
    report = _watch(settings)
    on_customers = lambda text: "classicmodels.customers" in text  # noqa: E731
    if fault == "500":
        slack.fail_when(on_customers, 500)
    else:
        slack.hang_when(on_customers, 3)
    with pytest.raises(AlertDeliveryError) as failed:
        notify_changes(report, settings)
    slack.heal()
    notify_changes(report, settings)  # the task's retry, with the same report
    notify_changes(report, settings)  # and once more: everything was said
    titles = [t.splitlines()[0] for t in slack.texts()]
    assert sorted(titles) == [
        "Additive schema change on classicmodels.customers",
        "Additive schema change on classicmodels.orders",
    ], "each table told exactly once"
    assert len(slack.refused) == 1 and on_customers(slack.refused[0]["body"]["text"])
    secret_parts = slack.secret.split("/")
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records) + str(failed.value)
    assert not any(part in logged for part in secret_parts), "the webhook's secret reached a log or error"


def test_a_failed_resumed_announcement_is_retried_once_delivered(scratch_replica, sql, slack, own_lake):
    """A paused table resumes when its breaking change is reverted. Slack fails on the 'resumed'
    message during the extraction's plan: the extraction goes on, the message stays owed, and the
    schema watch's notify delivers it once."""
    from retail_platform.schema_watch.notify import notify_changes

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    sql.execute(scratch_replica, "ALTER TABLE payments MODIFY COLUMN amount DECIMAL(9,2) NOT NULL")
    plan_run(own_lake, "classicmodels", end - timedelta(hours=1), end)
    from retail_platform.state import state_for

    assert "payments" in state_for(own_lake, "classicmodels").pauses()
    sql.execute(scratch_replica, "ALTER TABLE payments MODIFY COLUMN amount DECIMAL(10,2) NOT NULL")
    slack.fail_when(lambda text: "resumed" in text, 500)
    plans = plan_run(own_lake, "classicmodels", end, end + timedelta(hours=1))  # resumes; the message fails
    assert not next(p for p in plans if p.table == "payments").skip_reason
    assert not any("resumed" in t for t in slack.texts())
    slack.heal()
    notify_changes(_watch(own_lake), own_lake)
    notify_changes(_watch(own_lake), own_lake)
    plan_run(own_lake, "classicmodels", end, end + timedelta(hours=1))
    assert [t for t in slack.texts() if "resumed" in t] == [
        "Extraction of classicmodels.payments resumed\nNo breaking difference between the contract and the replica is left."
    ]


def test_a_notifier_whose_proper_message_cannot_be_built_still_sends_a_plainer_one(
    own_lake, tmp_path, monkeypatch
):
    """The replica's outage notifier reads the source's contract to say who hears of it; the contract
    folder is broken. The callback does not raise (Airflow would swallow the failure and nobody
    would hear): it sends a plainer alert with the task, the error and why the full one failed."""
    from types import SimpleNamespace

    from retail_airflow.notifiers import SourceOutageNotifier

    monkeypatch.setenv("RETAIL_CONTRACTS_DIR", str(tmp_path / "no-contracts-here"))
    ti = SimpleNamespace(
        dag_id="extract_classicmodels", task_id="plan_batches", map_index=-1, try_number=4, log_url=None
    )
    outage = ConnectionRefusedError("the replica refused the connection")
    SourceOutageNotifier("classicmodels").notify({"ti": ti, "exception": outage, "run_id": "r1"})
    (alert,) = alerts(own_lake)
    assert alert["kind"] == "task_failed" and alert["title"] == "extract_classicmodels.plan_batches failed"
    assert "the replica refused the connection" in alert["text"]
    assert "the full alert could not be built" in alert["text"] and "no-contracts-here" in alert["text"]


# ---------------------------------------------------------------- a Glue job that fails


def test_summarise_run_publishes_what_committed_and_withholds_for_a_critical_failure():
    from retail_platform.extract.plan import TablePlan
    from retail_platform.extract.publish import CriticalTablesFailed, summarise_run

    plans = [
        TablePlan(
            source="classicmodels",
            database="classicmodels",
            table=t,
            batch_id="b",
            interval_start=datetime(2026, 11, 30, tzinfo=UTC),
            interval_end=datetime(2026, 11, 30, 1, tzinfo=UTC),
            declared_mode="full",
            mode="full",
            primary_key=["id"],
            critical=t == "customers",
        ).to_dict()
        for t in ("customers", "offices", "orders")
    ]
    committed = {"table": "orders", "rows": 5, "mode": "incremental", "new_columns": []}
    summary = summarise_run(plans, [committed | {"table": "customers"}, committed, None])
    assert sorted(summary["committed"]) == ["customers", "orders"] and list(summary["failed"]) == ["offices"]
    with pytest.raises(CriticalTablesFailed, match="critical tables failed: customers"):
        summarise_run(plans, [None, committed | {"table": "offices"}, committed])


@pytest.fixture
def glue_runs_the_script(moto_server, reader, monkeypatch):
    """Simulated AWS Glue: each job run executes the real job script (PySpark in local mode) when it
    starts, except runs for the tables in `fail`, which the service reports FAILED."""
    import boto3
    from moto.glue.models import FakeJob

    from retail_platform.extract import glue_job

    fail: set[str] = set()
    boto3.client("secretsmanager", endpoint_url=moto_server).create_secret(
        Name="retail/classicmodels-replica-reader",
        SecretString=json.dumps(
            {
                "host": reader.host,
                "port": reader.port,
                "username": reader.user,
                "password": reader.password,
                "dbname": reader.database,
            }
        ),
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    real_start = FakeJob.start_job_run

    def start_and_run(job, **kwargs):
        run_id = real_start(job, **kwargs)
        run = next(r for r in job.job_runs if r.job_run_id == run_id)
        table = json.loads(run.arguments["--plan"])["table"]
        if table in fail:
            run.status = "FAILED"
            return run_id
        argv = [
            x for name, value in run.arguments.items() if name != "--extra-py-files" for x in (name, value)
        ]
        try:
            glue_job.main(argv + ["--partitions", "1"])
        except Exception:
            run.status = "FAILED"
        return run_id

    monkeypatch.setattr(FakeJob, "start_job_run", start_and_run)
    yield fail
    from pyspark.sql import SparkSession

    if SparkSession.getActiveSession() is not None:
        SparkSession.getActiveSession().stop()


def test_a_failed_glue_job_still_publishes_the_tables_that_committed(
    mariadb, airflow_db, own_lake, moto_server, s3_bucket, glue_runs_the_script, monkeypatch
):
    """The extraction with the Glue engine against moto's server: the job, its script and package
    are staged, one run per table executes the real script, and the run for `offices` fails. The
    tables that committed are published; a non-critical failure does not withhold the Asset."""
    import zipfile
    from io import BytesIO

    import boto3

    from retail_platform.extract import glue_job
    from retail_platform.sandbox.seed import seed_source

    seed_source(preset="classic", replace=True)
    boto3.client("iam", endpoint_url=moto_server).create_role(
        RoleName="retail-glue-extract",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )
    monkeypatch.setenv("RETAIL_EXTRACT_ENGINE", "glue")
    monkeypatch.setenv("RETAIL_GLUE_SCRIPTS_BUCKET", s3_bucket)
    monkeypatch.setenv("RETAIL_S3_ENDPOINT_URL", moto_server)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": moto_server, "region_name": "us-east-1"},
            }
        ),
    )
    glue_runs_the_script.add("offices")  # not critical
    dag = extract_dag()
    # retries lowered: the failed Glue run would be retried with minutes of backoff and fail the same
    # (the simulated service fails it every time); the shipped policy runs in the other DAG tests.
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 30, 14, tz="UTC"))
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert sorted(s for (t, _), s in states.items() if t == "extract_table") == ["failed"] + ["success"] * 8
    assert states[("publish", -1)] == "success"
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        (event,) = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run.run_id)).all()
    assert sorted(event.extra["committed"]) == sorted(t for t in CONTRACT.tables if t != "offices")
    assert list(event.extra["failed"]) == ["offices"]
    lake = lake_for(own_lake, "classicmodels")
    assert lake.committed_batches("offices") == [] and lake.committed_batches("orders")[0]["engine"] == "glue"
    # The wiring: one job, its script and the package staged on S3, one run per planned table.
    glue, s3 = (boto3.client(name, endpoint_url=moto_server) for name in ("glue", "s3"))
    job = glue.get_job(JobName="retail-extract-classicmodels")["Job"]
    assert job["Command"]["ScriptLocation"] == f"s3://{s3_bucket}/artifacts/glue-scripts/glue_job.py"
    assert job["Role"].endswith(":role/retail-glue-extract") and job["GlueVersion"] == "5.0"
    runs = glue.get_job_runs(JobName="retail-extract-classicmodels")["JobRuns"]
    assert sorted(json.loads(r["Arguments"]["--plan"])["table"] for r in runs) == sorted(CONTRACT.tables)
    script = s3.get_object(Bucket=s3_bucket, Key="artifacts/glue-scripts/glue_job.py")["Body"].read()
    assert script == Path(glue_job.__file__).read_bytes()
    package = runs[0]["Arguments"]["--extra-py-files"].removeprefix(f"s3://{s3_bucket}/")
    names = zipfile.ZipFile(BytesIO(s3.get_object(Bucket=s3_bucket, Key=package)["Body"].read())).namelist()
    assert "retail_platform/extract/glue_job.py" in names and "retail_platform/lake/batches.py" in names
    assert not any(n.startswith("retail_platform/sandbox/") for n in names), "the sandbox never ships"
