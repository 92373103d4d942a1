"""Extraction throughput and peak memory on an orderdetails-shaped table.

    ./platform python benchmarks/extract_throughput.py --rows 5000000 [--rows 20000000] [--skip-pandas]

Builds `bench_orderdetails` (orderdetails' columns and key) in the private MariaDB with the
server's SEQUENCE engine, then runs each method in its own process and reports rows a second
and the process's peak RSS:

* `platform`        the local engine as orderdetails runs: append-only (connectorx arrow_stream ->
                    Parquet, files hashed while written, the row count of the key range taken beside
                    the read), reconciliation and commit included
* `platform full`   the same table as a full snapshot: reconciled by per-column COUNT and
                    SUM(CRC32) on the server before and after the read, and over the Arrow data as
                    it is written (a thread beside the read)
* `streaming`       the reference: connectorx return_type="arrow_stream" (batch 100k) straight into
                    a ParquetWriter (zstd level 1): no types restored, no reconciliation, no commit
* `connectorx`      connectorx return_type="arrow" (whole table in memory) -> pyarrow.parquet
* `pandas`          pandas.read_sql -> DataFrame.to_parquet (the common path in Airflow DAGs)
* `mariadb client`  `mariadb --batch --quick` to /dev/null: the protocol floor, no Parquet
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

DDL = """
CREATE TABLE bench_orderdetails (
  orderNumber int(11) NOT NULL,
  productCode varchar(15) NOT NULL,
  quantityOrdered int(11) NOT NULL,
  priceEach decimal(10,2) NOT NULL,
  orderLineNumber smallint(6) NOT NULL,
  PRIMARY KEY (orderNumber, productCode)
) ENGINE=InnoDB DEFAULT CHARSET=latin1
"""
FILL = """
INSERT INTO bench_orderdetails
SELECT 10100 + (seq DIV 9), CONCAT('S', seq MOD 9, '_', LPAD(seq MOD 9973, 4, '0')), 20 + seq MOD 50,
       10 + ((seq * 7919) MOD 20000) / 100, 1 + seq MOD 9
FROM seq_0_to_{last}
"""
QUERY = "SELECT orderNumber, productCode, quantityOrdered, priceEach, orderLineNumber FROM bench_orderdetails"

CHILD = r"""
import json, os, sys, time
method, rows, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
from retail_platform.source.connection import parse_airflow_connection
reader = parse_airflow_connection("bench", os.environ["BENCH_SOURCE"])
query = os.environ["BENCH_QUERY"]
# Imports are a process's one-off cost, not throughput: every method loads its libraries first.
import connectorx, pyarrow, pyarrow.parquet, pandas, MySQLdb
from datetime import UTC, datetime
from retail_platform.extract.local_engine import extract_batch
from retail_platform.lake.batches import RawLake
from retail_platform.lake.storage import LakeStorage
started = time.perf_counter()
if method in ("platform", "platform full"):
    from retail_platform.extract.plan import TablePlan
    columns = [("orderNumber", "int(11)"), ("productCode", "varchar(15)"), ("quantityOrdered", "int(11)"),
               ("priceEach", "decimal(10,2)"), ("orderLineNumber", "smallint(6)")]
    mode = "full" if method == "platform full" else "append_only"
    plan = TablePlan(source="bench", database=reader.database, table="bench_orderdetails", batch_id="bench",
                     interval_start=datetime.now(UTC), interval_end=datetime.now(UTC), declared_mode=mode,
                     mode=mode, cursor=None if mode == "full" else "orderNumber", primary_key=["orderNumber", "productCode"],
                     columns=[{"name": n, "type": t, "nullable": False, "charset": "latin1"} for n, t in columns],
                     critical=True)
    manifest = extract_batch(plan, reader=reader, lake=RawLake(LakeStorage.from_uri(out), "bench"))
    assert manifest["reconciliation"]["status"] == "ok", manifest["reconciliation"]
    got = manifest["row_count"]
elif method == "streaming":
    import connectorx as cx, pyarrow.parquet as pq
    stream = cx.read_sql(reader.url(), query, return_type="arrow_stream", batch_size=100_000)
    writer, got = None, 0
    for batch in stream:
        if writer is None:
            writer = pq.ParquetWriter(out + "/data.parquet", batch.schema, compression="zstd", compression_level=1)
        writer.write_batch(batch)
        got += batch.num_rows
    writer.close()
elif method == "connectorx":
    import connectorx as cx, pyarrow.parquet as pq
    table = cx.read_sql(reader.url(), query, return_type="arrow")
    pq.write_table(table, out + "/data.parquet", compression="zstd", compression_level=1)
    got = table.num_rows
elif method == "pandas":
    import MySQLdb, pandas as pd, warnings
    warnings.simplefilter("ignore")
    conn = MySQLdb.connect(**reader.mysqlclient_kwargs())
    frame = pd.read_sql(query, conn)
    frame.to_parquet(out + "/data.parquet", compression="zstd")
    got = len(frame)
elapsed = time.perf_counter() - started
assert got == rows, (method, got, rows)
print(json.dumps({"seconds": elapsed}))
"""


def run_child(method: str, rows: int, source_uri: str) -> dict:
    out = tempfile.mkdtemp(prefix=f"bench-{method}-")
    env = os.environ | {"BENCH_SOURCE": source_uri, "BENCH_QUERY": QUERY}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, method, str(rows), out],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(process.pid, 0)
    stdout, stderr = process.stdout.read(), process.stderr.read()
    if status != 0:
        raise RuntimeError(f"{method} failed:\n{stderr[-3000:]}")
    seconds = json.loads(stdout.strip().splitlines()[-1])["seconds"]
    size = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs if f.endswith(".parquet")
    )
    shutil.rmtree(out, ignore_errors=True)
    return {
        "method": method,
        "rows": rows,
        "seconds": seconds,
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "parquet_mb": size / 2**20,
    }


def run_client_floor(rows: int, admin) -> dict:
    cmd = [
        "mariadb",
        "--batch",
        "--quick",
        "--skip-column-names",
        f"--host={admin.host}",
        f"--port={admin.port}",
        f"--user={admin.user}",
        admin.database,
        "-e",
        QUERY,
    ]
    started = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        process = subprocess.Popen(cmd, stdout=devnull, env=os.environ | {"MYSQL_PWD": admin.password})
        _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError("mariadb client failed")
    seconds = time.perf_counter() - started
    return {
        "method": "mariadb client",
        "rows": rows,
        "seconds": seconds,
        "wall_s": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "parquet_mb": 0.0,
    }


def prepare(admin, rows: int) -> None:
    from retail_platform.sandbox.generator.load import ensure_database
    from retail_platform.source.connection import connect

    ensure_database(admin)
    conn = connect(admin)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                "AND table_name = 'bench_orderdetails'"
            )
            if cur.fetchone()[0]:
                cur.execute("SELECT COUNT(*) FROM bench_orderdetails")
                if cur.fetchone()[0] == rows:
                    return
                cur.execute("DROP TABLE bench_orderdetails")
            cur.execute(DDL)
            started = time.perf_counter()
            cur.execute("SET SESSION unique_checks = 0")
            cur.execute(FILL.format(last=rows - 1))
        conn.commit()
        print(f"loaded {rows:,} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="table sizes (default 5,000,000)")
    parser.add_argument("--skip-pandas", action="store_true", help="pandas takes minutes at these sizes")
    parser.add_argument(
        "--methods", default="mariadb client,platform,platform full,streaming,connectorx,pandas"
    )
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the median is reported")
    args = parser.parse_args()
    from retail_platform.sandbox.mariadb import LocalMariaDB

    instance = LocalMariaDB.from_settings().ensure_running()
    admin = instance.connection("admin").with_database("classicmodels_bench")
    instance.grant_reader("classicmodels_bench")
    reader = instance.connection("reader").with_database("classicmodels_bench")
    methods = [m.strip() for m in args.methods.split(",")]
    if args.skip_pandas and "pandas" in methods:
        methods.remove("pandas")
    results = []
    for rows in args.rows or [5_000_000]:
        prepare(admin, rows)
        for method in methods:
            if method == "pandas" and rows > 5_000_000:
                continue  # it holds several copies of the table in memory; 5M rows makes the point
            runs = [
                run_client_floor(rows, admin)
                if method == "mariadb client"
                else run_child(method, rows, reader.url())
                for _ in range(1 if method == "pandas" else args.repeat)
            ]
            runs.sort(key=lambda r: r["seconds"])
            result = runs[len(runs) // 2] | {
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "runs": len(runs),
            }
            results.append(result)
            print(
                f"{method:>15} {rows:>11,} rows {result['seconds']:7.1f} s {rows / result['seconds']:>12,.0f} rows/s "
                f"peak {result['peak_rss_mb']:6.0f} MB",
                file=sys.stderr,
                flush=True,
            )
    print("\n| method | rows | seconds (median) | rows/s | peak RSS (MB) | Parquet (MB) | runs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['method']} | {r['rows']:,} | {r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['parquet_mb']:.0f} | {r['runs']} |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "results": results,
                    "cpu": os.cpu_count(),
                    "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                },
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
