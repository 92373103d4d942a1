"""Bulk-load a generated source into MySQL/MariaDB, and write its ground truth.

Tables go in with ``LOAD DATA LOCAL INFILE`` from CSV files that pyarrow writes:
one statement per million rows instead of a round trip per row.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from retail_platform.sandbox.generator.build import GeneratedSource
from retail_platform.sandbox.generator.schema import TABLE_ORDER, create_table_sql
from retail_platform.source.connection import MySQLConnectionInfo, connect

log = logging.getLogger(__name__)
CHUNK_ROWS = 1_000_000


class SourceNotEmptyError(RuntimeError):
    pass


def ensure_database(admin: MySQLConnectionInfo) -> None:
    """Create the target database if it is missing (classicmodels' default character set)."""
    import MySQLdb

    kwargs = admin.mysqlclient_kwargs(charset="utf8mb4")
    kwargs.pop("database")
    conn = MySQLdb.connect(**kwargs)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{admin.database}` CHARACTER SET latin1")
    finally:
        conn.close()


def existing_tables(conn, database: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name",
            (database,),
        )
        return [row[0] for row in cur.fetchall()]


def load_source(
    source: GeneratedSource,
    admin: MySQLConnectionInfo,
    *,
    replace: bool = False,
    work_dir: Path | None = None,
) -> dict[str, float]:
    """Create the schema and bulk-load every table; returns seconds per table."""
    ensure_database(admin)
    conn = connect(admin, local_infile=1, autocommit=False)
    timings: dict[str, float] = {}
    try:
        present = [t for t in existing_tables(conn, admin.database) if t in TABLE_ORDER]
        if present and not replace:
            raise SourceNotEmptyError(
                f"database {admin.database} already has tables {', '.join(present)}; "
                "pass --replace to drop and rebuild them"
            )
        with conn.cursor() as cur:
            cur.execute("SET SESSION foreign_key_checks = 0, unique_checks = 0")
            cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
            for table in reversed(TABLE_ORDER):
                cur.execute(f"DROP TABLE IF EXISTS `{table}`")
            for table in TABLE_ORDER:
                cur.execute(create_table_sql(table, source.variant))
        with tempfile.TemporaryDirectory(dir=work_dir, prefix="retail-load-") as tmp:
            for table in TABLE_ORDER:
                started = time.perf_counter()
                load_table(conn, table, source.tables[table], Path(tmp))
                timings[table] = time.perf_counter() - started
                log.info("loaded %s: %d rows in %.1f s", table, source.tables[table].num_rows, timings[table])
        with conn.cursor() as cur:
            cur.execute("SET SESSION foreign_key_checks = 1, unique_checks = 1")
            cur.execute("ANALYZE TABLE " + ", ".join(f"`{t}`" for t in TABLE_ORDER))
            cur.fetchall()
    finally:
        conn.close()
    return timings


def load_table(conn, table: str, data: pa.Table, tmp: Path) -> None:
    columns = data.column_names
    nullable = {field.name for field in data.schema if data.column(field.name).null_count > 0}
    # pyarrow writes NULL as an empty unquoted field; NULLIF turns it back (the generator
    # never produces empty strings, so nothing else is affected).
    targets = [f"@`{c}`" if c in nullable else f"`{c}`" for c in columns]
    sets = [f"`{c}` = NULLIF(@`{c}`, '')" for c in columns if c in nullable]
    path = tmp / f"{table}.csv"
    statement = (
        f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` CHARACTER SET utf8mb4 "
        "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
        "LINES TERMINATED BY '\\n' "
        f"({', '.join(targets)})" + (f" SET {', '.join(sets)}" if sets else "")
    )
    for offset in range(0, max(data.num_rows, 1), CHUNK_ROWS):
        chunk = data.slice(offset, CHUNK_ROWS)
        if chunk.num_rows == 0:
            break
        pacsv.write_csv(chunk, path, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        with conn.cursor() as cur:
            cur.execute(statement, (str(path),))
            loaded = cur.rowcount
            cur.execute("SHOW WARNINGS LIMIT 5")
            warnings = cur.fetchall()
        if warnings or loaded != chunk.num_rows:
            conn.rollback()
            raise RuntimeError(
                f"loading {table}: {loaded} of {chunk.num_rows} rows loaded; warnings: {list(warnings)}"
            )
        conn.commit()
    path.unlink(missing_ok=True)


def write_ground_truth(source: GeneratedSource, directory: Path) -> Path:
    """Write the hidden tastes, spikes and generation parameters next to each other."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, table in source.truth.items():
        pq.write_table(table, directory / f"{name}.parquet")
    (directory / "generation.json").write_text(json.dumps(source.metadata, indent=2, default=str) + "\n")
    if "purchase_model" in source.metadata:  # read by the recommender's evaluation (its ceiling)
        (directory / "purchase_model.json").write_text(
            json.dumps(source.metadata["purchase_model"], indent=2) + "\n"
        )
    return directory
