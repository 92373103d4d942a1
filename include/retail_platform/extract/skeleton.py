"""The extraction of one batch of one table: the same steps for every engine.

guard (a paused or unplannable table) -> cursor bounds -> the query -> read and reconcile, retried
(``MAX_ATTEMPTS`` reads at most) -> the rewrite guard (a rerun may not drop keys the source still
has) -> the manifest -> the commit. An engine supplies only what differs between them:

* a ``SourceSession`` for the small queries (bounds, counts, checksums, which keys exist): a MySQL
  connection for the local engine, Spark's JDBC reader for Glue;
* ``read``: how the rows get from the replica into the batch's Parquet files (connectorx's Arrow
  stream in-process; a Spark JDBC read on Glue), returning the files, rows, highest cursor value
  and, for a full snapshot, the column checksums of what it wrote.

Every error during a batch names the table. A replica that fails mid-batch is an outage
(``ExtractionError``, retried by the task); a table the plan could not honour is an error naming
its column; a paused table raises ``BatchSkipped`` in both engines.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from retail_platform.contract.model import ExtractionMode
from retail_platform.errors import StorageUnusable, unhealable_storage_cause
from retail_platform.extract import queries
from retail_platform.extract.bounds import Bounds, next_watermark, resolve_bounds
from retail_platform.extract.manifest import build_manifest, normalise_cursor_value
from retail_platform.extract.plan import TablePlan
from retail_platform.extract.reconcile import (
    ACCEPTED,
    ReconciliationError,
    Stats,
    Verdict,
    guard_rewrite,
    reconciliation_record,
    source_stats,
    verify,
)
from retail_platform.lake.batches import RawLake, WrittenFile

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # reads of a batch before reconciliation gives up (both engines)


class ExtractEngine(StrEnum):
    LOCAL = "local"  # in-process: connectorx's Arrow stream into Parquet
    GLUE = "glue"  # an AWS Glue (Spark) job per table


class ExtractionError(RuntimeError):
    pass


class BatchSkipped(RuntimeError):
    """The table is paused or otherwise not extracted in this run (not a failure)."""


class SourceSession(Protocol):
    """Small queries on the replica; each sees the data as of when it runs (no long transaction)."""

    def scalar(self, sql: str): ...

    def row(self, sql: str) -> tuple: ...

    def rows(self, sql: str) -> list[tuple]: ...

    def close(self) -> None: ...


@dataclass
class ReadResult:
    files: list[WrittenFile]
    rows: int
    max_cursor: object
    checksums: Stats | None  # full snapshots: what was written, column by column
    seconds: float


class Engine(Protocol):
    name: ExtractEngine

    def source_errors(self) -> tuple[type[BaseException], ...]:
        """Errors that mean the replica failed during the batch (an outage)."""

    def open_session(self) -> SourceSession: ...

    def read(
        self,
        plan: TablePlan,
        query: str,
        *,
        lake: RawLake,
        attempt: str,
        extracted_at: datetime,
        with_checksums: bool,
        on_started,
    ) -> ReadResult:
        """Write the query's rows into the batch folder. ``on_started`` (when not None) is called
        once the read's snapshot exists, so a count can overlap the read."""


def extract_table(
    engine: Engine, plan: TablePlan, lake: RawLake, *, max_attempts: int = MAX_ATTEMPTS
) -> dict:
    """Extract, reconcile and commit one batch of one table; returns the committed manifest."""
    if plan.skip_reason:
        raise BatchSkipped(f"{plan.table}: {plan.skip_reason}")
    if plan.error:
        raise ExtractionError(plan.error)
    session = engine.open_session()
    try:
        return _extract(engine, session, plan, lake, max_attempts)
    except engine.source_errors() as exc:  # the replica went away or failed mid-batch: retried
        raise ExtractionError(f"{plan.table}: the replica failed during the batch: {exc}") from exc
    except Exception as exc:  # a lake that cannot be written fails the same on every retry
        if unhealable_storage_cause(exc) is None:
            raise
        raise StorageUnusable(
            f"{plan.table}: the lake cannot be written, no retry can fix it: {exc}"
        ) from exc
    finally:
        with contextlib.suppress(Exception):  # a connection the replica dropped may not close cleanly
            session.close()


def _extract(
    engine: Engine, session: SourceSession, plan: TablePlan, lake: RawLake, max_attempts: int
) -> dict:
    previous = lake.read_manifest(plan.table, plan.batch_id)
    watermark = lake.watermark(plan.table)
    bounds = resolve_bounds(
        plan,
        manifest=previous,
        watermark=watermark,
        max_key=lambda: session.scalar(queries.max_key_sql(plan.database, plan.table, plan.cursor)),
        source_now=lambda: _as_utc(session.scalar(queries.source_now_sql())),
    )
    query = queries.select_sql(
        plan.database, plan.table, plan.column_names, plan.cursor, bounds.lower, bounds.upper
    )
    outcome = _read_reconciled(engine, session, plan, query, bounds, lake, max_attempts)
    guard_rewrite(session, lake, plan, previous, [f.path for f in outcome.read.files])
    commit_started = time.perf_counter()
    max_seen = normalise_cursor_value(outcome.read.max_cursor)
    manifest = build_manifest(
        plan,
        bounds=bounds,
        max_seen=max_seen,
        rows=outcome.read.rows,
        files=[lake.written_entry(plan.table, plan.batch_id, f) for f in outcome.read.files],
        reconciliation=reconciliation_record(
            outcome.verdict, outcome.detail, outcome.source, outcome.attempts
        ),
        query=query,
        engine=engine.name.value,
        attempt=outcome.attempt,
        extracted_at=outcome.extracted_at,
        timings={"extract_s": round(outcome.read.seconds, 3), "reconcile_s": round(outcome.reconcile_s, 3)},
    )
    lake.commit(manifest, watermark=next_watermark(plan, bounds, max_seen, watermark))
    manifest["timings"]["commit_s"] = round(time.perf_counter() - commit_started, 3)
    log.info("%s batch %s: %d rows (%s) committed", plan.table, plan.batch_id, outcome.read.rows, plan.mode)
    return manifest


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass
class _Outcome:
    read: ReadResult
    verdict: Verdict
    detail: str
    source: Stats
    attempts: int
    attempt: str
    extracted_at: datetime
    reconcile_s: float


def _read_reconciled(engine, session, plan: TablePlan, query: str, bounds: Bounds, lake, max_attempts: int):
    """Read until the batch reconciles with the source; raises ReconciliationError after the last try."""
    for attempt_no in range(1, max_attempts + 1):
        attempt, extracted_at = uuid.uuid4().hex[:12], datetime.now(UTC)
        read, before, after, reconcile_s = _read_once(
            engine, session, plan, query, bounds, lake, attempt, extracted_at
        )
        extracted = read.checksums if plan.mode is ExtractionMode.FULL else Stats(read.rows)
        verdict, detail = verify(
            plan.table, plan.mode, extracted, before, after, accept_changes=attempt_no >= 2
        )
        if verdict is Verdict.CHANGED_DURING_READ:
            log.warning("%s: %s", plan.table, detail)
        if verdict in ACCEPTED:
            return _Outcome(read, verdict, detail, after, attempt_no, attempt, extracted_at, reconcile_s)
        log.warning("%s attempt %d of %d: %s", plan.table, attempt_no, max_attempts, detail)
    raise ReconciliationError(f"{plan.table}: reconciliation with the source failed: {detail}")


def _read_once(engine, session, plan: TablePlan, query, bounds, lake, attempt, extracted_at):
    """One read of the batch and the source statistics it is reconciled with.

    A full snapshot is checked against checksums taken before and after it. Rows only leave an
    incremental range (updates move their cursor past it) and an append-only range never changes:
    there a count taken once the read has started is as good as one taken after it, so it runs
    beside the read (on a session of its own) when the engine says the read has started."""
    full = plan.mode is ExtractionMode.FULL
    before = source_stats(session, plan, bounds, with_checksums=True) if full else None
    with _Count(engine, plan, bounds) as count:
        read = engine.read(
            plan,
            query,
            lake=lake,
            attempt=attempt,
            extracted_at=extracted_at,
            with_checksums=full,
            on_started=None if full else count.start,
        )
        started = time.perf_counter()
        after = source_stats(session, plan, bounds, with_checksums=True) if full else count.result(session)
    return read, (after if before is None else before), after, time.perf_counter() - started


class _Count:
    """The source's row count in the batch's range, taken beside the read once it has started."""

    def __init__(self, engine, plan: TablePlan, bounds: Bounds):
        self.engine, self.plan, self.bounds = engine, plan, bounds
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._future = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._pool.shutdown(wait=True)

    def start(self) -> None:
        if self._future is None:
            self._future = self._pool.submit(self._count_on_own_session)

    def _count_on_own_session(self) -> Stats:
        session = self.engine.open_session()
        try:
            return source_stats(session, self.plan, self.bounds, with_checksums=False)
        finally:
            session.close()

    def result(self, session) -> Stats:
        if self._future is None:  # the engine never said it started: count now, after the read
            return source_stats(session, self.plan, self.bounds, with_checksums=False)
        return self._future.result()
