"""The lake after a month of 10-minute batches: commit cost, source registration and staging, before
and after compaction.

    ./platform python benchmarks/lake_scale.py [--batches 4320] [--rows 30] [--state-dir .state/bench-lake]

Builds `orders` (the contract's columns) in a lake of its own with `--batches` committed batches, as
`*/10` extraction leaves them after a month: each batch holds new orders and new versions of orders
from the batch before (the lookback's overlap). Reports:

* commit time (`RawLake.commit`: manifest, index switch, readers' list, watermark; fsync on every
  write) at 10, 100, 1,000 and the last batch, median of 5 commits each, beside the commit as it was
  before the index (the readers' list rebuilt from every manifest);
* `dbt run-operation register_lake_sources` (one dbt invocation: its start-up included);
* the staging model `stg_classicmodels__orders` (dbt's execution time of the model) and a full
  read of it (what every mart that selects from it pays), before compaction, after it, and on a
  table committed as one batch with the same rows.

The batches are written with fsync switched off between the measured points (building 4,320
batches with it would take minutes and measure nothing); every measured commit has it on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = (10, 100, 1000)
SAMPLES = 5


@contextmanager
def fsync_off(enabled: bool):
    real = os.fsync
    if enabled:
        os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def orders_batch(plan_schema, n: int, first_order: int, updated: list[int], at: datetime, batch_id: str):
    import pyarrow as pa

    numbers = list(range(first_order, first_order + n)) + updated
    rows = len(numbers)
    columns = {
        "orderNumber": numbers,
        "orderDate": [date(2026, 1, 1) + timedelta(days=k % 300) for k in numbers],
        "requiredDate": [date(2026, 1, 8) + timedelta(days=k % 300) for k in numbers],
        "shippedDate": [None if k >= first_order else date(2026, 1, 3) for k in numbers],
        "status": ["In Process" if k >= first_order else "Shipped" for k in numbers],
        "comments": [None] * rows,
        "customerNumber": [103 + k % 400 for k in numbers],
        "orderTimestamp": [at.replace(tzinfo=None) - timedelta(seconds=k % 600) for k in numbers],
        "updated_at": [at - timedelta(seconds=k % 600) for k in numbers],
        "_extracted_at": [at] * rows,
        "_batch_id": [batch_id] * rows,
    }
    return pa.table(columns, schema=plan_schema)


def build_lake(lake, schema, batches: int, rows: int, checkpoints) -> dict:
    """Commit ``batches`` batches; time the commits around each checkpoint (new and old way)."""
    import pyarrow.parquet as pq

    from retail_platform.lake.batches import WrittenFile, batch_id_for

    timings: dict[int, dict] = {}
    start = datetime(2026, 11, 1, tzinfo=UTC)
    previous: list[int] = []
    for i in range(1, batches + 1):
        begin = start + timedelta(minutes=10 * (i - 1))
        batch_id, attempt = batch_id_for(begin, begin + timedelta(minutes=10)), uuid.uuid4().hex[:12]
        first = 10100 + (i - 1) * rows
        table = orders_batch(
            schema, rows, first, previous[: rows // 2], begin + timedelta(minutes=10), batch_id
        )
        previous = list(range(first, first + rows))
        path = lake.data_file("orders", batch_id, attempt, 0)
        lake.storage.ensure_dir(lake.batch_dir("orders", batch_id))
        pq.write_table(table, path, compression="zstd", compression_level=1)
        data = Path(path).read_bytes()
        import hashlib

        written = WrittenFile(path, table.num_rows, len(data), hashlib.sha256(data).hexdigest())
        manifest = {
            "source": "classicmodels",
            "table": "orders",
            "batch_id": batch_id,
            "mode": "incremental",
            "row_count": table.num_rows,
            "files": [lake.written_entry("orders", batch_id, written)],
            "attempt": attempt,
            "extracted_at": (begin + timedelta(minutes=10)).isoformat(),
        }
        watermark = {"table": "orders", "cursor": "updated_at", "mode": "incremental",
                     "high_water": (begin + timedelta(minutes=10)).isoformat(), "batch_id": batch_id}  # fmt: skip
        measured = any(c - SAMPLES < i <= c for c in checkpoints)
        with fsync_off(not measured):
            started = time.perf_counter()
            lake.commit(manifest, watermark=watermark)
            commit_s = time.perf_counter() - started
        if measured:
            checkpoint = next(c for c in checkpoints if c - SAMPLES < i <= c)
            started = time.perf_counter()
            rebuild_index_the_old_way(lake, "orders")
            old_s = time.perf_counter() - started
            slot = timings.setdefault(checkpoint, {"commit_ms": [], "as_before_ms": []})
            slot["commit_ms"].append(commit_s)
            slot["as_before_ms"].append(old_s + commit_s)
    return {n: {k: round(statistics.median(v) * 1000, 1) for k, v in t.items()} for n, t in timings.items()}


def rebuild_index_the_old_way(lake, table: str) -> None:
    """What every commit did before the index: read every manifest, then stat every file."""
    manifests = lake.committed_batches(table)
    entries = [
        {"url": path, "meta": {"content_length": lake.storage.size(path)}}
        for m in manifests
        for path in (f"{lake.batch_dir(table, m['batch_id'])}/{f['path']}" for f in m["files"])
    ]
    lake.storage.write_json_atomic(f"{lake.table_dir(table)}/_old_style.manifest", {"entries": entries})


def warehouse_timings(settings) -> dict:
    """register_lake_sources, then the staging model, then a full read of it."""
    import duckdb

    from retail_platform.warehouse.dbt_runner import run_dbt
    from retail_platform.warehouse.snapshots import build_path, start_build

    start_build(settings)
    started = time.perf_counter()
    run_dbt(["run-operation", "register_lake_sources"], settings)
    register_s = time.perf_counter() - started
    result = run_dbt(["run", "--select", "stg_classicmodels__orders"], settings)
    model_s = result.results[0].execution_time
    with duckdb.connect(str(build_path(settings))) as conn:
        started = time.perf_counter()
        rows = conn.execute(
            "select count(*), count(distinct order_number), max(updated_at) from staging.stg_classicmodels__orders"
        ).fetchone()
        read_s = time.perf_counter() - started
    return {
        "register_lake_sources_s": round(register_s, 2),
        "staging_model_s": round(model_s, 3),
        "staging_read_s": round(read_s, 3),
        "staged_rows": rows[0],
    }


def single_batch_copy(lake, settings_dir: Path):
    """The same rows committed as one batch (the baseline a compacted table should match)."""
    import hashlib

    import pyarrow.parquet as pq

    from retail_platform.lake.batches import RawLake, WrittenFile
    from retail_platform.lake.storage import LakeStorage

    (compacted,) = lake.visible_manifests("orders")
    source = f"{lake.batch_dir('orders', compacted['batch_id'])}/{compacted['files'][0]['path']}"
    single = RawLake(LakeStorage.from_uri(str(settings_dir / "single-lake")), "classicmodels")
    batch_id, attempt = "20261101T000000Z_20261201T000000Z", uuid.uuid4().hex[:12]
    single.storage.ensure_dir(single.batch_dir("orders", batch_id))
    path = single.data_file("orders", batch_id, attempt, 0)
    shutil.copyfile(source, path)
    data = Path(path).read_bytes()
    written = WrittenFile(path, pq.read_metadata(path).num_rows, len(data), hashlib.sha256(data).hexdigest())
    single.commit(
        {
            "source": "classicmodels", "table": "orders", "batch_id": batch_id, "mode": "incremental",
            "row_count": written.rows, "files": [single.written_entry("orders", batch_id, written)],
            "attempt": attempt, "extracted_at": datetime.now(UTC).isoformat(),
        }
    )  # fmt: skip
    return single


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=4320)
    parser.add_argument("--rows", type=int, default=30, help="new orders a batch (half as many re-read)")
    parser.add_argument("--state-dir", default=str(ROOT / ".state" / "bench-lake"))
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    state = Path(args.state_dir).resolve()
    shutil.rmtree(state / "lake", ignore_errors=True)
    shutil.rmtree(state / "single-lake", ignore_errors=True)
    os.environ |= {
        "RETAIL_STATE_DIR": str(state),
        "RETAIL_LAKE_URI": str(state / "lake"),
        "RETAIL_DUCKDB_PATH": str(state / "warehouse" / "retail.duckdb"),
    }
    from retail_platform.contract.model import load_contract
    from retail_platform.extract.plan import PlannedColumn, TablePlan
    from retail_platform.lake.batches import lake_for
    from retail_platform.lake.compaction import compact_table, rule_for
    from retail_platform.settings import Settings

    settings = Settings.from_env()
    contract = load_contract(settings.contracts_dir / "classicmodels.yml")
    spec = contract.tables["orders"]
    plan = TablePlan(
        source="classicmodels", database="classicmodels", table="orders", batch_id="x",
        interval_start=datetime.now(UTC), interval_end=datetime.now(UTC), declared_mode="incremental",
        mode="incremental", primary_key=spec.primary_key,
        columns=[PlannedColumn(name=c.name, type=c.type, nullable=c.nullable) for c in spec.columns],
    )  # fmt: skip
    lake = lake_for(settings, "classicmodels")
    from retail_platform.warehouse.dbt_runner import run_dbt

    run_dbt(["parse"], settings)  # dbt's first parse of the project is not what is measured
    started = time.perf_counter()
    commits = build_lake(lake, plan.arrow_schema(), args.batches, args.rows, (*CHECKPOINTS, args.batches))
    print(f"built {args.batches:,} batches in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    figures = {
        "batches": args.batches,
        "commits_ms": commits,
        "before_compaction": warehouse_timings(settings),
    }
    started = time.perf_counter()
    result = compact_table(lake, rule_for(contract, "orders"))
    figures["compaction"] = {"seconds": round(time.perf_counter() - started, 2), **result.to_dict()}
    figures["after_compaction"] = warehouse_timings(settings)
    single = single_batch_copy(lake, state)
    os.environ["RETAIL_LAKE_URI"] = single.storage.root
    figures["single_batch_table"] = warehouse_timings(Settings.from_env())
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
