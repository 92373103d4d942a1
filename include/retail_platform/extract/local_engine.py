"""The local extraction engine: stream a table from the replica into Parquet with bounded memory.

connectorx reads the query as a stream of Arrow record batches (``arrow_stream``, fetched by its
own threads); each batch is conformed to the declared types (DECIMAL(10,2) comes back widened to
decimal128(38,10)) and stamped with ``_extracted_at`` and ``_batch_id``. Three stages overlap: the
stream, a writer thread that encodes, compresses and hashes the Parquet files (one row group per
batch), and for full snapshots a checksum thread. Memory holds a few batches, whatever the
table's size. The steps around the read (bounds, reconciliation, commit) are the skeleton's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from retail_platform.extract import queries
from retail_platform.extract.checksums import BackgroundChecksums
from retail_platform.extract.plan import TablePlan
from retail_platform.extract.reconcile import Stats
from retail_platform.extract.skeleton import (
    MAX_ATTEMPTS,
    BatchSkipped,  # noqa: F401 - raised by the skeleton; importers catch it from here too
    ExtractEngine,
    ExtractionError,
    ReadResult,
    extract_table,
)
from retail_platform.lake.batches import RawLake
from retail_platform.lake.parquet import FILE_ROWS, BackgroundWriter, BatchFileWriter
from retail_platform.source.connection import MySQLConnectionInfo, connect

BATCH_ROWS = 131_072  # rows per Arrow batch from connectorx, written as one Parquet row group
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LocalSession:
    """A MySQL connection in UTC with the statement timeout, autocommitting (each query sees now)."""

    def __init__(self, reader: MySQLConnectionInfo, statement_timeout_s: int):
        self.conn = connect(reader)
        self.conn.autocommit(True)
        version = self.scalar("SELECT VERSION()")
        self.setup = queries.session_setup(version, statement_timeout_s)
        for statement in self.setup:
            self.scalar(statement)

    def rows(self, sql: str) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []

    def row(self, sql: str) -> tuple:
        return self.rows(sql)[0]

    def scalar(self, sql: str):
        rows = self.rows(sql)
        return rows[0][0] if rows else None

    def close(self) -> None:
        self.conn.close()


class Conformer:
    """Casts a reader's batch to the lake schema and adds the bookkeeping columns (constant arrays
    built once and sliced, not rebuilt for every batch)."""

    def __init__(self, schema: pa.Schema, extracted_at: datetime, batch_id: str):
        self.schema, self.extracted_at, self.batch_id = schema, extracted_at, batch_id
        self._constants: dict[str, pa.Array] = {}

    def _constant(self, name: str, n: int) -> pa.Array:
        held = self._constants.get(name)
        if held is None or len(held) < n:
            if name == "_extracted_at":
                micros = (self.extracted_at - EPOCH) // timedelta(microseconds=1)
                held = pa.repeat(pa.scalar(micros, pa.int64()), max(n, BATCH_ROWS)).cast(
                    self.schema.field(name).type
                )
            else:
                held = pa.repeat(pa.scalar(self.batch_id, pa.string()), max(n, BATCH_ROWS))
            self._constants[name] = held
        return held.slice(0, n)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        arrays = []
        for field_ in self.schema:
            if field_.name in ("_extracted_at", "_batch_id"):
                arrays.append(self._constant(field_.name, n))
                continue
            column = batch.column(field_.name)
            if column.type != field_.type:
                # Safe casts: a value that does not fit its declared type fails loudly.
                column = column.cast(field_.type, safe=True)
            arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def conform(
    batch: pa.RecordBatch, schema: pa.Schema, extracted_at: datetime, batch_id: str
) -> pa.RecordBatch:
    return Conformer(schema, extracted_at, batch_id)(batch)


def column_max(column: pa.Array):
    """The column's maximum as a Python value, without pyarrow's pandas-backed datetime conversion."""
    if pa.types.is_timestamp(column.type):
        high = pc.max(column.cast(pa.int64())).as_py()
        if high is None:
            return None
        instant = EPOCH + timedelta(microseconds=high)
        return instant if column.type.tz else instant.replace(tzinfo=None)
    return pc.max(column).as_py()


class LocalEngine:
    name = ExtractEngine.LOCAL

    def __init__(
        self,
        reader: MySQLConnectionInfo,
        *,
        statement_timeout_s: int = 900,
        batch_rows: int = BATCH_ROWS,
        file_rows: int = FILE_ROWS,
    ):
        self.reader, self.statement_timeout_s = reader, statement_timeout_s
        self.batch_rows, self.file_rows = batch_rows, file_rows
        self._setup: list[str] | None = None

    def source_errors(self) -> tuple[type[BaseException], ...]:
        import MySQLdb

        return (MySQLdb.Error,)

    def open_session(self) -> LocalSession:
        session = LocalSession(self.reader, self.statement_timeout_s)
        self._setup = session.setup
        return session

    def _stream(self, query: str):
        import connectorx as cx

        return cx.read_sql(
            self.reader.url(),
            query,
            return_type="arrow_stream",
            batch_size=self.batch_rows,
            pre_execution_query=self._setup or [],
        )

    def read(
        self, plan: TablePlan, query: str, *, lake: RawLake, attempt, extracted_at, with_checksums, on_started
    ):
        schema = plan.arrow_schema()
        lake.storage.ensure_dir(lake.batch_dir(plan.table, plan.batch_id))
        writer = BackgroundWriter(
            BatchFileWriter(
                lake.storage.fs,
                schema,
                lambda n: lake.data_file(plan.table, plan.batch_id, attempt, n),
                self.file_rows,
            )
        )
        checksums = BackgroundChecksums(plan.columns) if with_checksums else None
        started = time.perf_counter()
        try:
            rows, max_cursor = self._pump(
                plan, query, Conformer(schema, extracted_at, plan.batch_id), writer, checksums, on_started
            )
            files = writer.close()
            sums = checksums.result() if checksums is not None else None
        except BaseException as exc:
            writer.abort()
            if checksums is not None:
                checksums.close()
            named = _named(plan, exc)
            if named is exc:
                raise
            raise named from exc
        return ReadResult(
            files=files,
            rows=rows,
            max_cursor=max_cursor,
            checksums=Stats(sums[0], sums[1]) if sums is not None else None,
            seconds=time.perf_counter() - started,
        )

    def _pump(self, plan: TablePlan, query, conform_batch, writer, checksums, on_started):
        rows, max_cursor = 0, None
        for raw in self._stream(query):
            if on_started is not None:
                on_started()  # the read's snapshot exists from here on
                on_started = None
            if raw.num_rows == 0:
                continue
            batch = conform_batch(raw)
            rows += batch.num_rows
            if checksums is not None:
                checksums.update(batch)
            if plan.cursor is not None:
                high = column_max(batch.column(plan.cursor))
                if high is not None and (max_cursor is None or high > max_cursor):
                    max_cursor = high
            writer.write(batch)
        return rows, max_cursor


def _named(plan: TablePlan, exc: BaseException) -> BaseException:
    """connectorx raises pyo3's PanicException, which is not an Exception: keep the interpreter's
    own signals, turn the rest into an error that names the table."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit, ExtractionError)):
        return exc
    if isinstance(exc, OSError):  # pyarrow's writer: a full disk, a lost S3 bucket
        return ExtractionError(f"{plan.table}: writing batch {plan.batch_id} to the lake failed: {exc}")
    return ExtractionError(f"{plan.table}: reading from the replica failed: {exc}")


def extract_batch(
    plan: TablePlan | dict,
    *,
    reader: MySQLConnectionInfo,
    lake: RawLake,
    statement_timeout_s: int = 900,
    max_attempts: int = MAX_ATTEMPTS,
    **stream_options,
) -> dict:
    """Extract, reconcile and commit one batch of one table with the local engine."""
    engine = LocalEngine(reader, statement_timeout_s=statement_timeout_s, **stream_options)
    return extract_table(engine, TablePlan.from_dict(plan), lake, max_attempts=max_attempts)
