"""Extraction against the real MariaDB: exact values, live writes, kills, backfills, failures, S3."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from interval_support import hour_interval

from retail_platform.contract.bootstrap import bootstrap_contract
from retail_platform.contract.model import ExtractionMode, load_contract, parse_contract
from retail_platform.extract import queries
from retail_platform.extract.local_engine import BatchSkipped, ExtractionError, extract_batch
from retail_platform.extract.plan import plan_extraction
from retail_platform.extract.reconcile import Stats, verify
from retail_platform.lake.batches import MANIFEST, RawLake
from retail_platform.lake.storage import LakeStorage
from retail_platform.sandbox.generator.live import run_live
from retail_platform.source.introspect import read_live_schema

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = load_contract(ROOT / "include" / "contracts" / "classicmodels.yml")
TABLES = sorted(CONTRACT.tables)


def extract_all(reader, lake: RawLake, start, end, *, contract=CONTRACT, tables=None, **options) -> dict:
    live = read_live_schema(reader)
    plans = plan_extraction(contract, live, interval_start=start, interval_end=end, tables=tables)
    return {p.table: extract_batch(p, reader=reader, lake=lake, **options) for p in plans}


def local_lake(path: Path, source: str = "classicmodels") -> RawLake:
    return RawLake(LakeStorage.from_uri(str(path)), source)


def normalise(value):
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def source_rows(sql, info, table, columns):
    rows = sql.query(info, f"SELECT {', '.join(queries.q(c) for c in columns)} FROM {queries.q(table)}")
    return sorted((tuple(normalise(v) for v in row) for row in rows), key=repr)


def lake_rows(lake: RawLake, table: str, columns):
    """Every row readers of the lake see (all committed batches), as sorted tuples."""
    data = lake.read_table(table)
    rows = data.to_pylist() if data is not None else []
    return sorted((tuple(normalise(r[c]) for c in columns) for r in rows), key=repr)


@pytest.mark.parametrize("variant", ["modern", "original"])
def test_every_table_lands_value_for_value(sql, reader, seed_scratch, tmp_path, variant):
    db = seed_scratch(f"x_{variant}", variant=variant)
    source = reader.with_database(db.database)
    lake = local_lake(tmp_path / "lake")
    manifests = extract_all(source, lake, *hour_interval())
    for table in TABLES:
        columns = [c["name"] for c in manifests[table]["columns"] if not c["name"].startswith("_")]
        assert lake_rows(lake, table, columns) == source_rows(sql, source, table, columns), table
        assert manifests[table]["reconciliation"]["status"] == "ok"
    # On the unmodified schema the cursor-less tables degrade to full snapshots.
    if variant == "original":
        assert manifests["orders"]["mode"] == "full" and "absent" in manifests["orders"]["mode_reason"]
        assert manifests["orderdetails"]["mode"] == "append_only"
    else:
        assert manifests["orders"]["mode"] == "incremental"
    assert manifests["customers"]["columns"][12] == {
        "name": "creditLimit",
        "arrow_type": "decimal128(10, 2)",
        "nullable": True,
        "source_type": "decimal(10,2)",
    }


def test_types_nulls_and_charsets_round_trip_exactly(sql, admin, mariadb, tmp_path):
    db = admin.with_database("classicmodels_types")
    from retail_platform.sandbox.generator.load import ensure_database

    ensure_database(db)
    sql.execute(
        db,
        "DROP TABLE IF EXISTS everything",
        """CREATE TABLE everything (
            id int NOT NULL PRIMARY KEY, small smallint, tiny tinyint, big bigint, price decimal(10,2),
            wide decimal(28,10), ratio double, d date, dt datetime, dt6 datetime(6), ts timestamp(6) NULL,
            latin varchar(50) CHARACTER SET latin1, utf varchar(50) CHARACTER SET utf8mb4, body text,
            long_body mediumtext CHARACTER SET utf8mb4, blob_col blob, mblob mediumblob, status enum('a','é'),
            doc json, flag bit(1)
        ) DEFAULT CHARSET=latin1""",
        "SET time_zone = '+00:00'",
        """INSERT INTO everything VALUES
            (1, -32768, -128, 9223372036854775807, 99999999.99, 123456789012345678.0123456789, 0.1,
             '1000-01-01', '2003-01-06 10:00:00', '2003-01-06 10:00:00.123456', '2024-03-15 12:34:56.654321',
             'Luleå Århus Genève ß', 'emoji 😀 中文 é', 'plain text', REPEAT('ü', 5000), X'00FF10', X'DEADBEEF',
             'é', '{"a": [1, "é"]}', b'1'),
            (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
             NULL, NULL, NULL),
            (3, 0, 0, 0, -0.01, 0.0000000001, -1.5e300, '9999-12-31', '9999-12-31 23:59:59',
             '2038-01-19 03:14:07.999999', '1970-01-01 00:00:01.000000', '', '', '', '', '', '', 'a', 'null', b'0')""",
    )
    mariadb.grant_reader(db.database)
    source = mariadb.connection("reader").with_database(db.database)
    live = read_live_schema(source)
    contract = bootstrap_contract(live, connection_id="x")
    lake = local_lake(tmp_path / "lake", contract.source.name)
    manifest = extract_all(source, lake, *hour_interval(), contract=contract)["everything"]
    columns = [c["name"] for c in manifest["columns"] if not c["name"].startswith("_")]
    got = lake.read_table("everything")
    types = {f.name: str(f.type) for f in got.schema}
    assert types["price"] == "decimal128(10, 2)" and types["wide"] == "decimal128(28, 10)"
    assert (
        types["ts"] == "timestamp[us, tz=UTC]"
        and types["dt6"] == "timestamp[us]"
        and types["d"] == "date32[day]"
    )
    rows = {r["id"]: r for r in got.to_pylist()}
    assert rows[1]["price"] == Decimal("99999999.99") and rows[1]["wide"] == Decimal(
        "123456789012345678.0123456789"
    )
    assert rows[1]["latin"] == "Luleå Århus Genève ß" and rows[1]["utf"] == "emoji 😀 中文 é"
    assert rows[1]["ts"] == datetime(2024, 3, 15, 12, 34, 56, 654321, tzinfo=UTC)
    assert rows[1]["mblob"] == b"\xde\xad\xbe\xef" and rows[1]["long_body"] == "ü" * 5000
    assert all(v is None for k, v in rows[2].items() if k not in ("id", "_extracted_at", "_batch_id"))
    assert rows[3]["latin"] == "" and rows[3]["ratio"] == -1.5e300
    assert lake_rows(lake, "everything", columns) == source_rows(sql, source, "everything", columns)
    # Full snapshot: checksums over text in its own character set matched the source's.
    assert manifest["reconciliation"]["detail"].startswith("3 rows; counts and checksums")


@pytest.mark.parametrize("variant", ["modern", "original"])
def test_live_writes_during_runs_lose_nothing_and_duplicate_nothing(
    sql, reader, seed_scratch, tmp_path, variant
):
    # "original" has no cursors on orders: those runs are full snapshots of a changing table.
    db = seed_scratch(f"live_{variant}", variant=variant, fresh=True)
    source = reader.with_database(db.database)
    lake = local_lake(tmp_path / "lake")
    stop, failed = threading.Event(), []

    def write_live():
        try:
            run_live(db, rate_per_s=40, duration_s=None, ship_fraction=0.5, tick_s=0.05, seed=3, stop=stop)
        except BaseException as exc:  # any error of the thread is the test's, reported below
            failed.append(exc)

    writer = threading.Thread(target=write_live)
    start = datetime.now(UTC) - timedelta(hours=1)
    writer.start()
    try:
        for _ in range(4):
            time.sleep(1.2)
            end = datetime.now(UTC)
            extract_all(source, lake, start, end)  # extraction runs while the writer keeps writing
            start = end
    finally:
        stop.set()
        writer.join()
    assert failed == [], "the live writer failed"
    time.sleep(0.1)
    extract_all(source, lake, start, datetime.now(UTC) + timedelta(seconds=1))
    changed = sql.query(source, "SELECT COUNT(*) FROM orders WHERE orderDate = CURDATE()")[0][0]
    assert changed > 50, "the live writer should have inserted orders during the runs"
    staging = build_staging(tmp_path, lake)
    for table in TABLES:
        staged_columns, staged = staging[table]
        # Staging keeps an optional column the unmodified schema lacks, as typed NULLs.
        in_source = {
            name
            for (name,) in sql.query(
                source,
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS"
                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                (table,),
            )
        }
        pairs = [
            (c.name, snake(c.name))
            for c in CONTRACT.tables[table].columns
            if snake(c.name) in staged_columns and c.name in in_source
        ]
        got = sorted(
            (tuple(normalise(r[staged_columns.index(s)]) for _, s in pairs) for r in staged), key=repr
        )
        assert got == source_rows(sql, source, table, [c for c, _ in pairs]), (
            f"{table}: staging differs from the source"
        )
    # Each append-only batch holds exactly the source's rows in its key range (they never change).
    for batch in lake.committed_batches("orderdetails"):
        lower, upper = batch["cursor"]["lower"], batch["cursor"]["upper"]
        where = " AND ".join(
            p for p in (f"orderNumber >= {lower}" if lower is not None else "", f"orderNumber < {upper}") if p
        )
        assert (
            batch["row_count"] == sql.query(source, f"SELECT COUNT(*) FROM orderdetails WHERE {where}")[0][0]
        )
    assert len(lake.committed_batches("orders")) == 5


def snake(name: str) -> str:
    """Staging's column name for a source column (customerNumber -> customer_number, MSRP -> msrp)."""
    return name.lower() if name.isupper() else re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def build_staging(tmp_path: Path, lake: RawLake) -> dict[str, tuple[list[str], list[tuple]]]:
    """The dbt staging models built over this lake (what every mart reads): columns and rows per table."""
    import duckdb

    from retail_platform.settings import Settings
    from retail_platform.warehouse.dbt_runner import run_dbt
    from retail_platform.warehouse.snapshots import build_path
    from retail_platform.warehouse.transform import prepare_build

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETAIL_LAKE_URI", lake.storage.root)
        mp.setenv("RETAIL_DUCKDB_PATH", str(tmp_path / "warehouse" / "retail.duckdb"))
        settings = Settings.from_env()
        prepare_build(settings)
        run_dbt(["run", "--select", "staging"], settings)
        # dbt (in this process) keeps its connection to the build file: open it the way dbt does
        # (DuckDB refuses a second configuration for one file in one process).
        with duckdb.connect(str(build_path(settings))) as conn:
            out = {}
            for table in TABLES:
                cursor = conn.execute(f"select * from staging.stg_classicmodels__{table}")
                out[table] = ([d[0] for d in cursor.description], cursor.fetchall())
    return out


def test_full_snapshot_of_a_table_that_never_stops_changing_is_accepted_on_the_retry(
    sql, reader, seed_scratch, tmp_path, monkeypatch
):
    """Each read sees a write commit between the checksums before and after it: the first
    attempt retries, the second is accepted when its count lies between the source's."""
    from retail_platform.extract.local_engine import LocalEngine

    db = seed_scratch("x_changing", variant="original", fresh=True)
    source = reader.with_database(db.database)
    real_read = LocalEngine.read
    reads = []

    def read_then_write(*args, **kwargs):
        result = real_read(*args, **kwargs)
        reads.append(result.rows)
        sql.execute(db, f"UPDATE orders SET comments = 'changed {len(reads)}' WHERE orderNumber = 10100")
        return result

    monkeypatch.setattr(LocalEngine, "read", read_then_write)
    lake = local_lake(tmp_path / "lake")
    manifest = extract_all(source, lake, *hour_interval(), tables=["orders"])["orders"]
    assert manifest["mode"] == "full" and len(reads) == 2
    assert manifest["reconciliation"]["status"] == "changed_during_read"
    assert manifest["reconciliation"]["attempts"] == 2
    assert "orders changed during every read" in manifest["reconciliation"]["detail"]
    assert lake.committed_batches("orders")[0]["row_count"] == reads[-1]


def commit_a_line_behind_each_read(sql, db, monkeypatch, *, reads: int) -> list[tuple]:
    """The first ``reads`` reads of ``orderdetails`` each miss a line committed out of key order:
    a new line of an order below the batch's upper bound commits once the read's snapshot exists
    (its first rows arrived) and before the source is counted. Returns the lines committed."""
    from retail_platform.extract.local_engine import LocalEngine

    real_read = LocalEngine.read
    committed: list[tuple] = []

    def commit_line():
        order, product = sql.query(
            db,
            "SELECT o.orderNumber, p.productCode FROM orders o JOIN products p"
            " WHERE o.orderNumber = (SELECT MIN(orderNumber) FROM orderdetails) AND NOT EXISTS"
            " (SELECT 1 FROM orderdetails d WHERE d.orderNumber = o.orderNumber"
            " AND d.productCode = p.productCode) ORDER BY p.productCode LIMIT 1",
        )[0]
        sql.execute(
            db,
            "INSERT INTO orderdetails (orderNumber, productCode, quantityOrdered, priceEach,"
            f" orderLineNumber) VALUES ({order}, '{product}', 1, 10.00, 99)",
        )
        committed.append((order, product))

    def read_missing_a_line(self, plan, query, *, on_started, **kwargs):
        def commit_then_count():
            if len(committed) < reads:
                commit_line()
            on_started()

        assert on_started is not None, "an append-only count runs beside the read"
        return real_read(self, plan, query, on_started=commit_then_count, **kwargs)

    monkeypatch.setattr(LocalEngine, "read", read_missing_a_line)
    return committed


def test_an_append_only_read_that_comes_up_short_once_is_retried(
    sql, reader, seed_scratch, tmp_path, monkeypatch
):
    """The platform's only defence against a transaction that commits out of key order: the count
    of the key range. One short read is retried, and the retry holds the late line."""
    db = seed_scratch("short_once", fresh=True)
    source = reader.with_database(db.database)
    committed = commit_a_line_behind_each_read(sql, db, monkeypatch, reads=1)
    lake = local_lake(tmp_path / "lake")
    manifest = extract_all(source, lake, *hour_interval(), tables=["orderdetails"])["orderdetails"]
    assert manifest["mode"] == "append_only" and len(committed) == 1
    assert (manifest["reconciliation"]["status"], manifest["reconciliation"]["attempts"]) == ("ok", 2)
    columns = [c.name for c in CONTRACT.tables["orderdetails"].columns]
    in_lake = lake_rows(lake, "orderdetails", columns)
    assert in_lake == source_rows(sql, source, "orderdetails", columns)
    assert committed[0] in {row[:2] for row in in_lake}, "the line committed out of key order is kept"


def test_an_append_only_read_that_always_comes_up_short_commits_nothing(
    sql, reader, seed_scratch, tmp_path, monkeypatch
):
    from retail_platform.extract.reconcile import ReconciliationError
    from retail_platform.extract.skeleton import MAX_ATTEMPTS

    db = seed_scratch("short_always", fresh=True)
    source = reader.with_database(db.database)
    committed = commit_a_line_behind_each_read(sql, db, monkeypatch, reads=MAX_ATTEMPTS)
    lake = local_lake(tmp_path / "lake")
    with pytest.raises(ReconciliationError) as failure:
        extract_all(source, lake, *hour_interval(), tables=["orderdetails"])
    assert str(failure.value).startswith("orderdetails: reconciliation with the source failed: ")
    assert "in the key range" in str(failure.value)
    assert len(committed) == MAX_ATTEMPTS, "every attempt read, and came up short"
    assert lake.committed_batches("orderdetails") == [] and lake.index("orderdetails").batches == {}
    assert lake.read_table("orderdetails") is None and lake.watermark("orderdetails") is None
    assert lake.readers_files("orderdetails") == set()


def test_backfill_of_a_past_interval_is_idempotent(sql, reader, seed_scratch, tmp_path):
    db = seed_scratch("backfill")
    source = reader.with_database(db.database)
    lake = local_lake(tmp_path / "lake")
    first = extract_all(source, lake, *hour_interval(3))
    second = extract_all(source, lake, *hour_interval(2))
    watermarks = {t: lake.watermark(t) for t in TABLES}
    before = {t: lake_rows(lake, t, [c.name for c in CONTRACT.tables[t].columns]) for t in TABLES}
    again = extract_all(source, lake, *hour_interval(3))
    for table in TABLES:
        assert again[table]["batch_id"] == first[table]["batch_id"]
        # A rerun reads from the same lower bound; an incremental table's rerun reads up to now.
        assert again[table]["cursor"].get("lower") == first[table]["cursor"].get("lower")
        if again[table]["mode"] == "incremental":
            assert again[table]["cursor"]["upper"] > first[table]["cursor"]["upper"]
        assert again[table]["row_count"] == first[table]["row_count"]
        assert lake_rows(lake, table, [c.name for c in CONTRACT.tables[table].columns]) == before[table]
        assert lake.watermark(table) == watermarks[table], "a backfill never moves the watermark back"
        kept = lake.read_manifest(table, second[table]["batch_id"])
        assert (kept["attempt"], kept["files"]) == (second[table]["attempt"], second[table]["files"]), (
            f"{table}: rerunning the older interval touched the newer batch"
        )
    # The replaced attempt's files are gone: only the committed attempt's files remain.
    batch_dir = Path(lake.batch_dir("orders", first["orders"]["batch_id"]))
    assert sorted(p.name for p in batch_dir.iterdir()) == sorted(
        [MANIFEST] + [f["path"] for f in again["orders"]["files"]]
    )


KILL_CHILD = """
import json, os, sys
from datetime import datetime
from retail_platform.contract.model import load_contract
from retail_platform.extract.plan import plan_extraction
from retail_platform.extract.local_engine import extract_batch
from retail_platform.lake.batches import RawLake
from retail_platform.lake.storage import LakeStorage
from retail_platform.source.connection import parse_airflow_connection
from retail_platform.source.introspect import read_live_schema
reader = parse_airflow_connection("x", os.environ["KILL_SOURCE"])
contract = load_contract(os.environ["KILL_CONTRACT"])
start, end = (datetime.fromisoformat(v) for v in os.environ["KILL_INTERVAL"].split("/"))
plans = plan_extraction(contract, read_live_schema(reader), interval_start=start, interval_end=end,
                        tables=os.environ["KILL_TABLES"].split(","))
lake = RawLake(LakeStorage.from_uri(os.environ["KILL_LAKE"]), "classicmodels")
print("ready", flush=True)
for plan in plans:
    extract_batch(plan, reader=reader, lake=lake, batch_rows=8192, file_rows=32768)
print("done", flush=True)
"""


def committed_state_is_whole(lake: RawLake, table: str) -> None:
    """What readers see: every manifest's files exist, match their checksums and row counts."""
    import hashlib

    import pyarrow.parquet as pq

    for manifest in lake.committed_batches(table):
        total = 0
        for entry in manifest["files"]:
            path = f"{lake.batch_dir(table, manifest['batch_id'])}/{entry['path']}"
            data = Path(path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{path} torn or replaced"
            rows = pq.read_metadata(path).num_rows
            assert rows == entry["rows"]
            total += rows
        assert total == manifest["row_count"]


def test_sigkill_at_random_points_never_exposes_a_partial_batch(reader, seed_scratch, tmp_path):
    db = seed_scratch("kill", preset="prod", scale=0.03)
    source = reader.with_database(db.database)
    tables = ["orderdetails", "customers", "ratings"]
    interval = hour_interval()
    reference = local_lake(tmp_path / "reference")
    extract_all(source, reference, *interval, tables=tables)
    env = os.environ | {
        "KILL_SOURCE": source.url(),
        "KILL_CONTRACT": str(ROOT / "include" / "contracts" / "classicmodels.yml"),
        "KILL_INTERVAL": "/".join(t.isoformat() for t in interval),
        "KILL_TABLES": ",".join(tables),
    }
    # How long the extraction itself takes in the child, from "ready" to "done": the faster of two
    # runs, so that a load spike during the timing does not put most kills after the end.
    runs = []
    for attempt in range(2):
        timing = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD],
            env=env | {"KILL_LAKE": str(tmp_path / f"timing-{attempt}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert timing.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        assert timing.stdout.readline().strip() == "done"
        runs.append(time.perf_counter() - started)
        timing.wait()
    clean_run_s = min(runs)
    rng = random.Random(1234)
    columns = {t: [c.name for c in CONTRACT.tables[t].columns] for t in tables}
    expected = {t: lake_rows(reference, t, columns[t]) for t in tables}
    killed_mid_run = 0
    for trial in range(24):  # at least 12 trials, more until 8 kills landed while the extraction ran
        if trial >= 12 and killed_mid_run >= 8:
            break
        lake_dir = tmp_path / f"kill-{trial}"
        if trial % 2:  # half the trials rewrite an already-committed batch
            extract_all(source, local_lake(lake_dir), *interval, tables=tables)
        child = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD],
            env=env | {"KILL_LAKE": str(lake_dir)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, clean_run_s))
        if child.poll() is None:
            killed_mid_run += 1
        child.send_signal(signal.SIGKILL)
        child.wait()
        lake = local_lake(lake_dir)
        for table in tables:
            committed_state_is_whole(lake, table)
            if trial % 2:  # the old batch stays visible, whole, until the new one replaces it
                assert lake_rows(lake, table, columns[table]) == expected[table]
        extract_all(source, lake, *interval, tables=tables)  # the rerun after the crash
        for table in tables:
            committed_state_is_whole(lake, table)
            assert lake_rows(lake, table, columns[table]) == expected[table], f"trial {trial}: {table}"
            leftovers = {p.name for p in Path(lake.table_dir(table)).rglob("*.parquet")}
            committed = {f["path"] for m in lake.committed_batches(table) for f in m["files"]}
            assert leftovers == committed, f"trial {trial}: files of the killed attempt were not cleaned up"
    assert killed_mid_run >= 8, f"only {killed_mid_run} of 24 kills landed while the extraction ran"


def test_unsupported_type_or_missing_cursor_fails_naming_the_column(
    sql, admin, reader, seed_scratch, tmp_path
):
    db = seed_scratch("drift", fresh=True)
    sql.execute(db, "ALTER TABLE customers ADD COLUMN location POINT NULL")
    source = reader.with_database(db.database)
    live = read_live_schema(source)
    plans = {
        p.table: p
        for p in plan_extraction(
            CONTRACT, live, interval_start=hour_interval()[0], interval_end=hour_interval()[1]
        )
    }
    lake = local_lake(tmp_path / "lake")
    with pytest.raises(ExtractionError, match=r"column customers\.location has an unsupported type: point"):
        extract_batch(plans["customers"], reader=source, lake=lake)
    assert lake.committed_batches("customers") == []
    assert extract_batch(plans["orders"], reader=source, lake=lake)["row_count"] > 0  # other tables go on

    original = seed_scratch("x_original", variant="original")
    strict = yaml.safe_load((ROOT / "include" / "contracts" / "classicmodels.yml").read_text())
    for column in strict["tables"]["orders"]["columns"]:
        column.pop("optional", None)
    strict_contract = parse_contract(strict)
    live = read_live_schema(reader.with_database(original.database))
    plan = plan_extraction(
        strict_contract,
        live,
        interval_start=hour_interval()[0],
        interval_end=hour_interval()[1],
        tables=["orders"],
    )[0]
    with pytest.raises(ExtractionError, match=r"cursor column orders\.updated_at is missing on the replica"):
        extract_batch(plan, reader=reader.with_database(original.database), lake=lake)


def test_paused_table_is_skipped_with_its_reason(reader, seed_scratch, tmp_path):
    db = seed_scratch("x_modern")
    live = read_live_schema(reader.with_database(db.database))
    plan = plan_extraction(
        CONTRACT,
        live,
        interval_start=hour_interval()[0],
        interval_end=hour_interval()[1],
        pauses={"orders": {"since": "2026-11-24", "reason": "column dropped"}},
        tables=["orders"],
    )[0]
    with pytest.raises(BatchSkipped, match="paused since 2026-11-24: column dropped"):
        extract_batch(plan, reader=reader.with_database(db.database), lake=local_lake(tmp_path))


def test_reconciliation_verdicts_name_the_table():
    plan = ("orders", ExtractionMode.FULL)
    same = Stats(10, {"a": (10, 123)})
    assert verify(*plan, Stats(9, {"a": (9, 100)}), same, same) == (
        "mismatch",
        "orders: extracted 9 rows, the source has 10",
    )
    assert verify(*plan, Stats(10, {"a": (10, 124)}), same, same)[1] == (
        "orders: checksums differ from the source for a"
    )
    assert verify(*plan, Stats(10, {"a": (10, 123)}), same, Stats(11, {"a": (11, 130)}))[0] == "retry"
    changing = (*plan, Stats(10, {"a": (10, 125)}), same, Stats(11, {"a": (11, 130)}))
    assert verify(*changing, accept_changes=True)[0] == "changed_during_read"
    assert verify(*plan, Stats(12, {}), same, Stats(11, {}), accept_changes=True) == (
        "mismatch",
        "orders: extracted 12 rows, outside the source's 10 -> 11 during the read",
    )
    incremental = ("orders", ExtractionMode.INCREMENTAL)
    assert verify(*incremental, Stats(5), Stats(5), Stats(6))[0] == "retry"
    assert verify(*incremental, Stats(6), Stats(5), Stats(5))[0] == "ok"


def test_session_variables_per_server_flavour():
    assert queries.session_setup("10.11.19-MariaDB", 1) == [
        "SET time_zone = '+00:00'",
        "SET SESSION max_statement_time = 1",
    ]
    assert queries.session_setup("8.0.36", 2)[1] == "SET SESSION max_execution_time = 2000"
    from retail_platform.extract.glue_job import jdbc_url
    from retail_platform.source.connection import MySQLConnectionInfo

    assert queries.session_variables("10.11.19-MariaDB-0+deb12u1", 900) == {
        "time_zone": "'+00:00'",
        "max_statement_time": "900",
    }
    assert queries.session_variables("8.0.36", 900) == {
        "time_zone": "'+00:00'",
        "max_execution_time": "900000",
    }
    info = MySQLConnectionInfo("replica", 3306, "reader", "secret", "classicmodels")
    assert jdbc_url(info, queries.session_variables("8.4.0", 5)) == (
        "jdbc:mysql://replica:3306/classicmodels?sessionVariables=time_zone='+00:00',max_execution_time=5000"
    )
    assert "secret" not in jdbc_url(info)


def test_the_platforms_statement_timeout_aborts_a_read_that_waits(sql, reader, seed_scratch, tmp_path):
    """Another session holds a write lock on the table, so the extraction's read waits: the
    platform's own per-statement timeout (1 s here) ends it with an error naming the table, long
    before the read-only user's server-side limit (900 s) would."""
    db = seed_scratch("slow", fresh=True)
    source = reader.with_database(db.database)
    (plan,) = plan_extraction(
        CONTRACT,
        read_live_schema(source),
        interval_start=hour_interval()[0],
        interval_end=hour_interval()[1],
        tables=["offices"],
    )
    from retail_platform.source.connection import connect

    holder = connect(db)
    with holder.cursor() as cur:
        cur.execute("LOCK TABLES offices WRITE")
    outcome: list = []

    def extract():
        try:
            extract_batch(plan, reader=source, lake=local_lake(tmp_path / "lake"), statement_timeout_s=1)
        except BaseException as exc:  # whatever it is, the assertions below look at it
            outcome.append(exc)

    worker = threading.Thread(target=extract, daemon=True)
    started = time.perf_counter()
    worker.start()
    worker.join(timeout=30)
    try:
        assert not worker.is_alive(), "the read was not aborted by the platform's timeout"
        (error,) = outcome
        assert isinstance(error, ExtractionError) and str(error).startswith("offices: ")
        assert "max_statement_time exceeded" in str(error)
        assert time.perf_counter() - started < 10
    finally:
        with holder.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        holder.close()
        worker.join(timeout=60)


def test_s3_lake_through_moto(sql, reader, seed_scratch, moto_server, s3_bucket):
    db = seed_scratch("x_modern")
    source = reader.with_database(db.database)
    lake = RawLake(
        LakeStorage.from_uri(f"s3://{s3_bucket}/lake", s3_endpoint_url=moto_server), "classicmodels"
    )
    manifests = extract_all(source, lake, *hour_interval())
    for table in ("orders", "orderdetails", "offices"):
        columns = [c.name for c in CONTRACT.tables[table].columns]
        assert lake_rows(lake, table, columns) == source_rows(sql, source, table, columns)
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server)
    index = json.loads(
        s3.get_object(Bucket=s3_bucket, Key="lake/raw/classicmodels/orders/_committed.manifest")[
            "Body"
        ].read()
    )
    assert [e["url"] for e in index["entries"]] == [
        f"s3://{s3_bucket}/lake/raw/classicmodels/orders/batch_id={manifests['orders']['batch_id']}/"
        f"{manifests['orders']['files'][0]['path']}"
    ]
    assert lake.watermark("orders")["high_water"] == manifests["orders"]["cursor"]["max_seen"]
    again = extract_all(source, lake, *hour_interval(), tables=["orders"])
    assert again["orders"]["row_count"] == manifests["orders"]["row_count"]
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="lake/raw/classicmodels/orders/")["Contents"]
    ]
    assert len([k for k in keys if k.endswith(".parquet")]) == 1, "the superseded attempt's file was removed"
