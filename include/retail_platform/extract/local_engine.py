"""The local extraction engine: stream a table from the replica into Parquet with bounded memory.

connectorx reads the query as a stream of Arrow record batches (``arrow_stream``); each
batch is conformed to the declared types (DECIMAL(10,2) comes back widened to
decimal128(38,10)), stamped with ``_extracted_at`` and ``_batch_id``, and appended to a
Parquet row group. Memory holds about one row group, whatever the table's size.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from retail_platform.extract import queries
from retail_platform.extract.bounds import next_watermark, resolve_bounds
from retail_platform.extract.manifest import build_manifest, normalise_cursor_value
from retail_platform.extract.plan import arrow_schema_for
from retail_platform.extract.reconcile import (
    ACCEPTED,
    ArrowChecksums,
    ReconciliationError,
    Stats,
    guard_rewrite,
    reconciliation_record,
    source_stats,
    verify,
)
from retail_platform.lake.batches import RawLake
from retail_platform.source.connection import MySQLConnectionInfo, connect

log = logging.getLogger(__name__)

BATCH_ROWS = 131_072  # rows per Arrow batch from connectorx, written as one Parquet row group
FILE_ROWS = 4_000_000  # rows per Parquet file before the next part starts
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ExtractionError(RuntimeError):
    pass


class BatchSkipped(RuntimeError):
    """The table is paused or otherwise not extracted in this run (not a failure)."""


@dataclass
class StreamResult:
    files: list[tuple[str, int]] = field(default_factory=list)
    rows: int = 0
    max_cursor: object = None
    checksums: ArrowChecksums | None = None
    seconds: float = 0.0


def conform(
    batch: pa.RecordBatch, schema: pa.Schema, extracted_at: datetime, batch_id: str
) -> pa.RecordBatch:
    """Cast a batch from the reader to the lake schema and add the bookkeeping columns."""
    n = batch.num_rows
    arrays = []
    for field_ in schema:
        if field_.name == "_extracted_at":
            arrays.append(pa.repeat(pa.scalar(_epoch_us(extracted_at), pa.int64()), n).cast(field_.type))
        elif field_.name == "_batch_id":
            arrays.append(pa.repeat(pa.scalar(batch_id, pa.string()), n))
        else:
            column = batch.column(field_.name)
            if column.type != field_.type:
                # Safe casts: a value that does not fit its declared type fails loudly.
                column = column.cast(field_.type, safe=True)
            arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _epoch_us(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def _column_max(column: pa.Array):
    """The column's maximum as a Python value, without pyarrow's pandas-backed datetime conversion."""
    if pa.types.is_timestamp(column.type):
        high = pc.max(column.cast(pa.int64())).as_py()
        if high is None:
            return None
        instant = EPOCH + timedelta(microseconds=high)
        return instant if column.type.tz else instant.replace(tzinfo=None)
    return pc.max(column).as_py()


def _reader_stream(reader: MySQLConnectionInfo, query: str, setup: list[str], batch_rows: int):
    import connectorx as cx

    return cx.read_sql(
        reader.url(),
        query,
        return_type="arrow_stream",
        batch_size=batch_rows,
        pre_execution_query=setup,
    )


def stream_to_lake(
    plan: dict,
    query: str,
    *,
    reader: MySQLConnectionInfo,
    setup: list[str],
    lake: RawLake,
    attempt: str,
    extracted_at: datetime,
    with_checksums: bool,
    on_first_batch=None,
    batch_rows: int = BATCH_ROWS,
    file_rows: int = FILE_ROWS,
) -> StreamResult:
    table, batch_id = plan["table"], plan["batch_id"]
    schema = arrow_schema_for(plan)
    result = StreamResult(checksums=ArrowChecksums(plan) if with_checksums else None)
    lake.storage.ensure_dir(lake.batch_dir(table, batch_id))
    cursor = plan["cursor"]
    writer, path, file_rows_written = None, None, 0

    def open_file():
        nonlocal writer, path, file_rows_written
        path = lake.data_file(table, batch_id, attempt, len(result.files))
        writer = pq.ParquetWriter(path, schema, filesystem=lake.storage.fs, **PARQUET_OPTIONS)
        file_rows_written = 0

    def close_file():
        nonlocal writer
        writer.close()
        writer = None
        result.files.append((path, file_rows_written))

    started = time.perf_counter()
    try:
        stream = _reader_stream(reader, query, setup, batch_rows)
        for raw in stream:
            if on_first_batch is not None:
                on_first_batch()  # the read's snapshot exists from here on
                on_first_batch = None
            if raw.num_rows == 0:
                continue
            batch = conform(raw, schema, extracted_at, batch_id)
            result.rows += batch.num_rows
            if result.checksums is not None:
                result.checksums.update(batch)
            if cursor is not None:
                high = _column_max(batch.column(cursor))
                if high is not None and (result.max_cursor is None or high > result.max_cursor):
                    result.max_cursor = high
            if writer is None:
                open_file()
            writer.write_batch(batch)  # one Arrow batch, one row group: no re-buffering
            file_rows_written += batch.num_rows
            if file_rows_written >= file_rows:
                close_file()
        if writer is None and not result.files:
            open_file()  # an empty batch still records its schema in one (empty) file
        if writer is not None:
            close_file()
    except BaseException as exc:
        # connectorx raises pyo3's PanicException, which is not an Exception: keep the
        # interpreter's own signals, turn the rest into an error that names the table.
        if writer is not None:
            with contextlib.suppress(Exception):  # the original error matters, not the cleanup's
                writer.close()
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        if isinstance(exc, ExtractionError):
            raise
        if isinstance(exc, OSError):  # pyarrow's writer: a full disk, a lost S3 bucket
            raise ExtractionError(f"{table}: writing batch {batch_id} to the lake failed: {exc}") from exc
        raise ExtractionError(f"{table}: reading from the replica failed: {exc}") from exc
    result.seconds = time.perf_counter() - started
    return result


def _read_and_count(plan, query, bounds, *, conn, reader, setup, lake, attempt, extracted_at, stream_options):
    """One read of the batch and the source statistics it is reconciled with.

    A full snapshot is checked against checksums taken before and after it. Rows only leave an
    incremental range (updates move their cursor past it) and an append-only range never changes:
    there a count taken once the read has started is as good as one taken after it, so it runs on
    a second connection meanwhile."""
    full = plan["mode"] == "full"
    lower, upper = bounds["lower"], bounds["upper"]
    counting: list = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        if full:
            before = source_stats(conn, plan, lower, upper, with_checksums=True)
            conn.commit()  # end the snapshot so the next statistics see new data
            start_count = None
        else:
            before = None

            def start_count():
                counting.append(pool.submit(_count_in_range, reader, setup, plan, lower, upper))

        streamed = stream_to_lake(
            plan,
            query,
            reader=reader,
            setup=setup,
            lake=lake,
            attempt=attempt,
            extracted_at=extracted_at,
            with_checksums=full,
            on_first_batch=start_count,
            **stream_options,
        )
        reconcile_started = time.perf_counter()
        if full:
            after = source_stats(conn, plan, lower, upper, with_checksums=True)
            conn.commit()
        else:
            after = (
                counting[0].result()
                if counting
                else source_stats(conn, plan, lower, upper, with_checksums=False)
            )
    extracted = streamed.checksums.stats() if full else Stats(streamed.rows)
    return (
        streamed,
        after if before is None else before,
        after,
        extracted,
        time.perf_counter() - reconcile_started,
    )


def _count_in_range(reader: MySQLConnectionInfo, setup: list[str], plan: dict, lower, upper) -> Stats:
    conn = connect(reader)
    try:
        with conn.cursor() as cur:
            for statement in setup:
                cur.execute(statement)
        return source_stats(conn, plan, lower, upper, with_checksums=False)
    finally:
        conn.close()


def extract_batch(
    plan: dict,
    *,
    reader: MySQLConnectionInfo,
    lake: RawLake,
    statement_timeout_s: int = 900,
    max_attempts: int = 3,
    **stream_options,
) -> dict:
    """Extract, reconcile and commit one batch of one table; returns the committed manifest."""
    table = plan["table"]
    if plan.get("skip_reason"):
        raise BatchSkipped(f"{table}: {plan['skip_reason']}")
    if plan.get("error"):
        raise ExtractionError(plan["error"])
    import MySQLdb

    conn = connect(reader)
    try:
        return _extract_and_commit(
            plan, conn, reader, lake, statement_timeout_s, max_attempts, stream_options
        )
    except MySQLdb.Error as exc:  # the replica went away or failed mid-batch: an outage, retried
        raise ExtractionError(f"{table}: the replica failed during the batch: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):  # a connection the replica dropped may not close cleanly
            conn.close()


def _extract_and_commit(plan, conn, reader, lake, statement_timeout_s, max_attempts, stream_options) -> dict:
    table = plan["table"]
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = cur.fetchone()[0]
        setup = queries.session_setup(version, statement_timeout_s)
        for statement in setup:
            cur.execute(statement)

    def scalar(sql):
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]

    previous = lake.read_manifest(table, plan["batch_id"])
    watermark = lake.watermark(table)
    bounds = resolve_bounds(
        plan,
        manifest=previous,
        watermark=watermark,
        max_key=lambda: scalar(queries.max_key_sql(plan["database"], table, plan["cursor"])),
        source_now=lambda: scalar(queries.source_now_sql()).replace(tzinfo=UTC),
    )
    columns = [c["name"] for c in plan["columns"]]
    query = queries.select_sql(
        plan["database"], table, columns, plan["cursor"], bounds["lower"], bounds["upper"]
    )
    for attempt_no in range(1, max_attempts + 1):
        attempt = uuid.uuid4().hex[:12]
        extracted_at = datetime.now(UTC)
        streamed, before, after, extracted, reconcile_s = _read_and_count(
            plan,
            query,
            bounds,
            conn=conn,
            reader=reader,
            setup=setup,
            lake=lake,
            attempt=attempt,
            extracted_at=extracted_at,
            stream_options=stream_options,
        )
        verdict, detail = verify(plan, extracted, before, after, accept_changes=attempt_no >= 2)
        if verdict == "changed_during_read":
            log.warning("%s: %s", table, detail)
        if verdict in ACCEPTED:
            break
        log.warning("%s attempt %d of %d: %s", table, attempt_no, max_attempts, detail)
    else:
        raise ReconciliationError(f"{table}: reconciliation with the source failed: {detail}")
    guard_rewrite(conn, lake, plan, previous, [path for path, _ in streamed.files])
    commit_started = time.perf_counter()
    max_seen = normalise_cursor_value(streamed.max_cursor)
    manifest = build_manifest(
        plan,
        bounds=bounds,
        max_seen=max_seen,
        rows=streamed.rows,
        files=[lake.file_entry(table, plan["batch_id"], path, rows) for path, rows in streamed.files],
        reconciliation=reconciliation_record(verdict, detail, after, attempt_no),
        query=query,
        engine="local",
        attempt=attempt,
        extracted_at=extracted_at,
        timings={"extract_s": round(streamed.seconds, 3), "reconcile_s": round(reconcile_s, 3)},
    )
    lake.commit(manifest, watermark=next_watermark(plan, bounds, max_seen, watermark))
    manifest["timings"]["commit_s"] = round(time.perf_counter() - commit_started, 3)
    log.info("%s batch %s: %d rows (%s) committed", table, plan["batch_id"], streamed.rows, plan["mode"])
    return manifest
