"""The lake at scale: commits that update the index from the previous one, and compaction that keeps
the lake's meaning exactly (a staged warehouse identical before and after), is safe beside an
extraction commit and against SIGKILL at any point, and removes superseded files only after a grace
period. Against the real MariaDB, dbt and DuckDB."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_extraction import CONTRACT, TABLES, build_staging, extract_all, local_lake, normalise

from retail_platform.extraction_modes import ExtractionMode
from retail_platform.lake import compaction
from retail_platform.lake.batches import COMPACTED, MANIFEST, RawLake, batch_id_for, index_entry
from retail_platform.lake.compaction import collect_garbage, compact_table, rule_for
from retail_platform.sandbox.generator.live import run_live

ROOT = Path(__file__).resolve().parents[1]


def live_writes(db, seed: int) -> None:
    """New orders with their lines and ratings, some shipped (updates), committed now."""
    run_live(db, rate_per_s=300, duration_s=0.4, ship_fraction=0.6, tick_s=0.05, seed=seed)


@pytest.fixture(scope="module")
def many_batches(reader, seed_scratch, tmp_path_factory):
    """A lake of four batches per table over a source that changes between them: incremental
    batches overlap (their lookback re-reads the rows just updated), append-only ones overlap by
    their key lookback, full snapshots repeat. Returns (lake folder, source, db)."""
    db = seed_scratch("compact", fresh=True)
    source = reader.with_database(db.database)
    folder = tmp_path_factory.mktemp("many") / "lake"
    lake = local_lake(folder)
    start = datetime.now(UTC) - timedelta(hours=1)
    for round_ in range(4):
        if round_:
            live_writes(db, seed=round_)
        end = datetime.now(UTC) + timedelta(seconds=1)
        extract_all(source, lake, start, end)
        start = end
        time.sleep(1.1)  # the next interval starts after this one ended
    return folder, source, db


def copy_of(folder: Path, tmp_path: Path) -> RawLake:
    """A copy of the lake; its readers' lists name files by absolute path, so they are written
    again for the copy's place."""
    target = tmp_path / "lake"
    shutil.copytree(folder, target)
    lake = local_lake(target)
    for table in TABLES:
        lake.publish_readers_index(table, lake.index(table))
    return lake


def staged_rows(lake: RawLake, table: str) -> list[tuple]:
    """What staging keeps of a table (latest_per_key: the cursor descending, nulls last, then the
    extraction, then the batch), as sorted tuples of every column; computed here, apart from dbt."""
    spec = CONTRACT.tables[table]
    data = lake.read_table(table)
    if data is None:
        return []
    columns = data.column_names
    # The staging models' version column: updated_at wherever the table has one.
    version = "updated_at" if "updated_at" in spec.column_names else None
    best: dict[tuple, dict] = {}

    def rank(row):
        v = row.get(version) if version else None
        return (v is not None, v or 0, row["_extracted_at"], row["_batch_id"])

    for row in data.to_pylist():
        key = tuple(row[k] for k in spec.primary_key)
        if key not in best or rank(row) > rank(best[key]):
            best[key] = row
    return sorted((tuple(normalise(r[c]) for c in columns) for r in best.values()), key=repr)


def every_row(lake: RawLake, table: str) -> list[tuple]:
    data = lake.read_table(table)
    return sorted((tuple(normalise(v) for v in r.values()) for r in data.to_pylist()), key=repr)


def readers_see_whole_files(lake: RawLake, table: str, previous: set[str] | None = None) -> None:
    """Every file the readers' list names exists with the size and checksum its manifest records.
    The list names the index's files, or (after a writer was killed between its index switch and
    the list) ``previous``, the files it named before, still whole."""
    index = lake.index(table)
    listed = lake.readers_files(table)
    if previous is not None and listed == previous != set(lake.committed_files(table)):
        assert all(Path(path).is_file() for path in listed), f"{table}: a previous file is gone"
        return
    assert listed == set(lake.committed_files(table)), f"{table}: readers' list behind the index"
    for batch_id in index.visible():
        manifest = lake.read_manifest(table, batch_id)
        assert manifest is not None, f"{table}: visible batch {batch_id} has no manifest"
        for entry in manifest["files"]:
            path = f"{lake.batch_dir(table, batch_id)}/{entry['path']}"
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == entry["sha256"], path


# ---------------------------------------------------------------- the index


def counted_storage_calls(lake: RawLake, monkeypatch) -> list[tuple[str, str]]:
    """Every read, write, listing, existence check and delete the lake's storage makes from now on,
    as (operation, path)."""
    calls: list[tuple[str, str]] = []
    for operation in ("read_bytes", "write_bytes_atomic", "list", "exists", "delete"):
        real = getattr(lake.storage, operation)

        def counted(path, *args, _real=real, _operation=operation, **kwargs):
            calls.append((_operation, path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(lake.storage, operation, counted)
    return calls


def what_is(lake: RawLake, table: str, batch_id: str, path: str) -> str:
    """What a storage path is, as the commit's cost is told: its own batch or another one."""
    named = {
        lake.index_path(table): "index",
        lake.readers_index_path(table): "readers' list",
        lake.watermark_path(table): "watermark",
        lake.manifest_path(table, batch_id): "own manifest",
    }
    if path in named:
        return named[path]
    own = path.startswith(lake.batch_dir(table, batch_id))
    if path.endswith(f"/{MANIFEST}"):
        return "own manifest" if own else "another batch's manifest"
    return "own batch folder or file" if own else f"other: {path}"


def add_copies_of_the_newest_batch(lake: RawLake, table: str, copies: int) -> None:
    """More committed batches, cheaply: the newest batch's files under new (old) intervals, each
    committed as an extraction commits."""
    newest = lake.read_manifest(table, lake.index(table).visible()[-1])
    source_dir = Path(lake.batch_dir(table, newest["batch_id"]))
    first = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(hours=len(lake.index(table).batches))
    for i in range(copies):
        start = first + timedelta(hours=i)
        batch_id = batch_id_for(start, start + timedelta(hours=1))
        target = Path(lake.batch_dir(table, batch_id))
        target.mkdir(parents=True)
        for entry in newest["files"]:
            shutil.copy2(source_dir / entry["path"], target / entry["path"])
        lake.commit(newest | {"batch_id": batch_id})


def test_a_commits_reads_and_writes_do_not_grow_with_the_batches_it_joins(
    many_batches, tmp_path, monkeypatch
):
    """An extraction's commit updates the index from the previous index alone: at 4, 12 and 36
    committed batches it makes the same reads and writes, reads no other batch's manifest, reads
    the index once and writes the index and the readers' list once each."""
    folder, source, _ = many_batches
    lake = copy_of(folder, tmp_path)
    now = datetime.now(UTC)
    costs = {}
    for step, batches in enumerate((4, 12, 36)):
        add_copies_of_the_newest_batch(lake, "orders", batches - len(lake.index("orders").batches))
        before = lake.index("orders")
        with monkeypatch.context() as patch:
            calls = counted_storage_calls(lake, patch)
            start = now + timedelta(seconds=step)
            (new,) = extract_all(
                source, lake, start, start + timedelta(seconds=1), tables=["orders"]
            ).values()
        costs[batches] = sorted(
            Counter((op, what_is(lake, "orders", new["batch_id"], path)) for op, path in calls).items()
        )
        index = lake.index("orders")
        assert index.visible() == sorted([*before.visible(), new["batch_id"]])
        assert index.generation == before.generation + 1
        assert lake.readers_files("orders") == set(lake.committed_files("orders"))
    assert costs[4] == costs[12] == costs[36], costs
    cost = dict(costs[4])
    assert not [k for k in cost if "another" in k[1] or k[1].startswith("other")], cost
    assert cost[("read_bytes", "index")] == 1
    assert cost[("write_bytes_atomic", "index")] == cost[("write_bytes_atomic", "readers' list")] == 1
    assert cost[("write_bytes_atomic", "own manifest")] == 1


def test_an_index_is_built_once_from_the_manifests_of_an_older_lake(many_batches, tmp_path):
    folder, _, _ = many_batches
    lake = copy_of(folder, tmp_path)
    expected = lake.committed_files("customers")
    Path(lake.index_path("customers")).unlink()
    assert lake.committed_files("customers") == expected


# ---------------------------------------------------------------- compaction keeps the meaning


def test_compaction_leaves_the_staged_warehouse_identical(many_batches, tmp_path):
    """dbt's staging models over the lake before and after compaction: the same rows, column for
    column (with each row's own extraction time and batch), from one file a table."""
    folder, _, _ = many_batches
    lake = copy_of(folder, tmp_path)
    before = build_staging(tmp_path / "before", lake)
    files_before = {t: len(lake.committed_files(t)) for t in TABLES}
    rows_before = {t: every_row(lake, t) for t in ("orderdetails",)}
    for table in TABLES:
        result = compact_table(lake, rule_for(CONTRACT, table))
        assert result.merged == (
            4 if CONTRACT.tables[table].extraction.mode is not ExtractionMode.FULL else 0
        )
        readers_see_whole_files(lake, table)
    after = build_staging(tmp_path / "after", lake)
    for table in TABLES:
        (columns, rows), (columns_after, rows_after) = before[table], after[table]
        assert columns_after == columns, table
        assert sorted(rows_after, key=repr) == sorted(rows, key=repr), (
            f"{table}: staging differs after compaction"
        )
    assert files_before["orders"] == 4 and all(len(lake.committed_files(t)) == 1 for t in TABLES)
    assert every_row(lake, "orderdetails") == rows_before["orderdetails"], "append-only keeps every row"
    (orders,) = lake.visible_manifests("orders")
    assert orders["mode"] == COMPACTED and orders["row_count"] < orders["compaction"]["rows_in"]
    assert orders["row_count"] == len(after["orders"][1]), "incremental keeps one version per key"


def test_full_tables_keep_their_newest_snapshot_and_lose_the_rest_after_the_grace_period(
    many_batches, tmp_path
):
    folder, _, _ = many_batches
    lake = copy_of(folder, tmp_path)
    newest = lake.committed_files("offices")
    result = compact_table(lake, rule_for(CONTRACT, "offices"))
    assert (result.merged, result.superseded_hidden) == (0, 3)
    assert lake.committed_files("offices") == newest
    assert collect_garbage(lake, "offices", grace=timedelta(hours=6)) == []
    removed = collect_garbage(
        lake, "offices", grace=timedelta(hours=6), now=datetime.now(UTC) + timedelta(hours=7)
    )
    assert len(removed) == 3 and all(not Path(p).exists() for p in removed)
    assert len(lake.batch_ids("offices")) == 1 and lake.index("offices").superseded == []


def test_superseded_files_stay_for_the_grace_period(many_batches, tmp_path):
    """A query that listed the files before the switch (the warehouse's sources are registered at the
    start of a build) still reads them until the grace period is over."""
    folder, _, _ = many_batches
    lake = copy_of(folder, tmp_path)
    listed_before = lake.committed_files("customers")
    compact_table(lake, rule_for(CONTRACT, "customers"))
    assert collect_garbage(lake, "customers", grace=timedelta(hours=6)) == []
    assert sum(pq.read_metadata(p).num_rows for p in listed_before) > 0  # the running query finishes
    later = datetime.now(UTC) + timedelta(hours=6, minutes=1)
    removed = collect_garbage(lake, "customers", grace=timedelta(hours=6), now=later)
    assert sorted(removed) == sorted(listed_before)
    assert not set(removed) & lake.readers_files("customers")
    readers_see_whole_files(lake, "customers")


class WriterKilled(BaseException):
    """A writer's death between its index switch and its readers' list."""


def test_a_readers_list_left_behind_is_caught_up_and_its_files_outlive_it(
    many_batches, tmp_path, monkeypatch
):
    folder, _, _ = many_batches
    lake = copy_of(folder, tmp_path)
    listed_before = lake.readers_files("orders")

    def killed(*_):
        raise WriterKilled

    with monkeypatch.context() as patched:
        patched.setattr(RawLake, "publish_readers_index", killed)
        with pytest.raises(WriterKilled):
            compact_table(lake, rule_for(CONTRACT, "orders"))
    assert lake.readers_files("orders") == listed_before != set(lake.committed_files("orders"))
    # The garbage run catches the list up, but a query may still read what it named: kept this round.
    assert collect_garbage(lake, "orders", grace=timedelta(0)) == []
    readers_see_whole_files(lake, "orders")
    assert all(Path(path).is_file() for path in listed_before)
    removed = collect_garbage(lake, "orders", grace=timedelta(0))
    assert sorted(removed) == sorted(listed_before)
    on_disk = {str(p) for p in Path(lake.table_dir("orders")).rglob("*.parquet")}
    assert on_disk == set(lake.committed_files("orders")), "nothing superseded is left for good"


# ---------------------------------------------------------------- beside an extraction commit


@pytest.mark.parametrize("meanwhile", ["a new batch", "a rewrite of a merged batch"])
def test_compaction_and_extraction_commits_at_the_same_time_lose_nothing(
    many_batches, tmp_path, monkeypatch, meanwhile
):
    """Compaction merges while extraction commits (in another thread, between the merge and the
    switch): a new batch stays visible beside the compacted one; a batch the compaction merged and
    an extraction rewrote meanwhile makes it merge again from the new index. Either way readers
    see what they saw before the switch."""
    folder, source, db = many_batches
    lake = copy_of(folder, tmp_path)
    merged, go_on = threading.Event(), threading.Event()
    real_write = compaction._write_compacted
    calls = []

    def write_then_wait(*args):
        manifest = real_write(*args)
        calls.append(manifest["batch_id"])
        if len(calls) == 1:
            merged.set()
            assert go_on.wait(120)
        return manifest

    monkeypatch.setattr(compaction, "_write_compacted", write_then_wait)
    outcome: dict = {}

    def compact():
        try:
            outcome["result"] = compact_table(lake, rule_for(CONTRACT, "orders"))
        except BaseException as exc:  # any error of the thread is the test's, reported below
            outcome["error"] = exc

    worker = threading.Thread(target=compact)
    worker.start()
    try:
        assert merged.wait(120)
        live_writes(db, seed=11)
        if meanwhile == "a new batch":
            now = datetime.now(UTC)
            (committed,) = extract_all(
                source, lake, now, now + timedelta(seconds=1), tables=["orders"]
            ).values()
        else:
            newest = lake.index("orders").visible()[-1]
            interval = lake.read_manifest("orders", newest)["data_interval"]
            bounds = (datetime.fromisoformat(interval[k]) for k in ("start", "end"))
            (committed,) = extract_all(source, lake, *bounds, tables=["orders"]).values()
            assert committed["batch_id"] == newest
        expected = staged_rows(lake, "orders")  # what readers see with the commit, before the switch
    finally:
        go_on.set()
        worker.join(120)
    assert not worker.is_alive() and "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    if meanwhile == "a new batch":
        assert len(calls) == 1
        assert set(lake.index("orders").visible()) == {result.batch_id, committed["batch_id"]}
    else:
        assert len(calls) == 2, "the rewritten batch made the compaction merge again"
        assert lake.index("orders").visible() == [result.batch_id]
    assert staged_rows(lake, "orders") == expected
    readers_see_whole_files(lake, "orders")


# ---------------------------------------------------------------- SIGKILL at any point

KILL_CHILD = """
import os, sys
from retail_platform.lake.batches import RawLake
from retail_platform.lake.compaction import compact_table, rule_for
from retail_platform.lake.storage import LakeStorage
from retail_platform.contract.model import load_contract
contract = load_contract(os.environ["KILL_CONTRACT"])
lake = RawLake(LakeStorage.from_uri(os.environ["KILL_LAKE"]), "classicmodels")
print("ready", flush=True)
for table in os.environ["KILL_TABLES"].split(","):
    compact_table(lake, rule_for(contract, table))
print("done", flush=True)
"""


def test_sigkill_during_compaction_never_exposes_a_partial_state(many_batches, tmp_path):
    folder, _, _ = many_batches
    tables = ["orderdetails", "customers", "orders", "offices"]
    reference = local_lake(folder)
    expected = {t: staged_rows(reference, t) for t in tables}
    all_rows = every_row(reference, "orderdetails")
    env = os.environ | {
        "KILL_CONTRACT": str(ROOT / "include" / "contracts" / "classicmodels.yml"),
        "KILL_TABLES": ",".join(tables),
    }

    def child(lake_dir: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD],
            env=env | {"KILL_LAKE": str(lake_dir)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert process.stdout.readline().strip() == "ready"
        return process

    timing = child(copy_of(folder, tmp_path / "timing").storage.root)
    started = time.perf_counter()
    assert timing.stdout.readline().strip() == "done"
    clean_s = time.perf_counter() - started
    timing.wait()
    rng = random.Random(99)
    killed_mid_run = 0
    for trial in range(8):
        lake = copy_of(folder, tmp_path / f"kill-{trial}")
        before = {table: lake.readers_files(table) for table in tables}
        process = child(Path(lake.storage.root))
        time.sleep(rng.uniform(0, clean_s))
        killed_mid_run += process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait()
        for table in tables:  # readers see the old set or the new one, whole
            readers_see_whole_files(lake, table, previous=before[table])
            assert staged_rows(lake, table) == expected[table], f"trial {trial}: {table}"
        for table in tables:  # compaction again, then the garbage: nothing of the killed run is left
            compact_table(lake, rule_for(CONTRACT, table))
            readers_see_whole_files(lake, table)  # a list left behind is caught up
            collect_garbage(lake, table, grace=timedelta(0))
            assert staged_rows(lake, table) == expected[table], f"trial {trial}: {table} after the rerun"
            on_disk = {str(p) for p in Path(lake.table_dir(table)).rglob("*.parquet")}
            assert on_disk == set(lake.committed_files(table)), f"trial {trial}: {table} left files behind"
        assert every_row(lake, "orderdetails") == all_rows
    assert killed_mid_run >= 5, "most kills should land while the compaction runs"


def test_an_abandoned_compaction_folder_is_removed_after_the_grace_period(many_batches, tmp_path):
    folder, _, _ = many_batches
    lake = copy_of(folder, tmp_path)
    index = lake.index("payments")
    visible = index.visible()
    manifest = compaction._write_compacted(lake, rule_for(CONTRACT, "payments"), index, visible)
    assert lake.index("payments").visible() == visible, "written but never switched: invisible"
    assert collect_garbage(lake, "payments", grace=timedelta(hours=1)) == []
    removed = collect_garbage(
        lake, "payments", grace=timedelta(hours=1), now=datetime.now(UTC) + timedelta(hours=2)
    )
    assert removed and not Path(lake.batch_dir("payments", manifest["batch_id"])).exists()
    assert index_entry(manifest)["mode"] == COMPACTED
