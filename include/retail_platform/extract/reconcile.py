"""Reconcile a batch with the source: row counts always, per-column checksums for full snapshots.

A column checksum is (non-null count, sum of CRC32 of each value's text). MySQL computes it
with ``SUM(CRC32(col))``; the extractor computes the same over the Arrow batches it writes
(``extract.checksums``), formatting values as MySQL does and encoding text in the column's
character set. Floating point and TIME columns are compared by count only (their text forms
differ between the two).

Every query here goes through a ``SourceSession`` (``extract.skeleton``): the local engine's
MySQL connection or the Glue engine's Spark JDBC reader, so both engines reconcile alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from retail_platform.contract.model import ExtractionMode
from retail_platform.contract.types import parse_type
from retail_platform.extract import queries
from retail_platform.extract.checksums import UNCHECKED_BASES
from retail_platform.extract.plan import TablePlan


class ReconciliationError(RuntimeError):
    pass


class Verdict(StrEnum):
    OK = "ok"
    CHANGED_DURING_READ = "changed_during_read"  # accepted: a full snapshot of a table that kept changing
    RETRY = "retry"
    MISMATCH = "mismatch"


ACCEPTED = (Verdict.OK, Verdict.CHANGED_DURING_READ)


@dataclass
class Stats:
    rows: int
    columns: dict[str, tuple[int, int]] | None = None  # name -> (non-null count, crc32 sum)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "columns": {k: list(v) for k, v in (self.columns or {}).items()} or None}


def checksummed_columns(plan: TablePlan) -> list[str]:
    return [c.name for c in plan.columns if parse_type(c.type).base not in UNCHECKED_BASES]


def source_stats(session, plan: TablePlan, bounds, *, with_checksums: bool) -> Stats:
    """The source's row count in the batch's range, and for a full snapshot its column checksums."""
    if with_checksums:
        names = checksummed_columns(plan)
        row = session.row(queries.checksum_sql(plan.database, plan.table, names))
        columns = {name: (int(row[1 + 2 * i]), int(row[2 + 2 * i])) for i, name in enumerate(names)}
        return Stats(int(row[0]), columns)
    sql = queries.count_sql(plan.database, plan.table, plan.cursor, bounds.lower, bounds.upper)
    return Stats(int(session.scalar(sql)))


def reconciliation_record(verdict: Verdict, detail: str, source: Stats, attempts: int) -> dict:
    """What a batch manifest says of its reconciliation (both engines)."""
    return {"status": str(verdict), "detail": detail, "source": source.to_dict(), "attempts": attempts}


def _verify_full(table, extracted: Stats, before: Stats, after: Stats, accept_changes: bool):
    if before.rows != after.rows or before.columns != after.columns:
        low, high = sorted((before.rows, after.rows))
        if accept_changes and low <= extracted.rows <= high:
            return (
                Verdict.CHANGED_DURING_READ,
                f"{extracted.rows} rows; {table} changed during every read ({before.rows} -> "
                f"{after.rows} rows): count within the source's, checksums not comparable",
            )
        if accept_changes:
            return (
                Verdict.MISMATCH,
                f"{table}: extracted {extracted.rows} rows, outside the source's "
                f"{before.rows} -> {after.rows} during the read",
            )
        return Verdict.RETRY, f"{table} changed during the snapshot ({before.rows} -> {after.rows} rows)"
    if extracted.rows != after.rows:
        return Verdict.MISMATCH, f"{table}: extracted {extracted.rows} rows, the source has {after.rows}"
    differing = sorted(k for k, v in (after.columns or {}).items() if (extracted.columns or {}).get(k) != v)
    if differing:
        return Verdict.MISMATCH, f"{table}: checksums differ from the source for {', '.join(differing)}"
    return (
        Verdict.OK,
        f"{extracted.rows} rows; counts and checksums of {len(after.columns or {})} columns match",
    )


def verify(
    table: str,
    mode: ExtractionMode,
    extracted: Stats,
    before: Stats,
    after: Stats,
    *,
    accept_changes: bool = False,
) -> tuple[Verdict, str]:
    """A full snapshot of a table that keeps changing can never match checksums taken before and
    after it. The read itself is one consistent statement, so once a retry has changed too
    (``accept_changes``) the batch is accepted when its row count lies between the two counts,
    and the manifest says the checksums could not be compared."""
    if mode is ExtractionMode.FULL:
        return _verify_full(table, extracted, before, after, accept_changes)
    if mode is ExtractionMode.APPEND_ONLY:
        # Keys below the batch's upper bound never change: the count must match exactly.
        # A difference is retried first (a transaction committing out of key order), then fails.
        if extracted.rows != after.rows:
            return (
                Verdict.RETRY,
                f"{table}: extracted {extracted.rows} rows, the source has {after.rows} in the key range",
            )
        return Verdict.OK, f"{extracted.rows} rows; count matches the key range"
    # incremental: rows may leave the range while we read (an update moves their cursor past the
    # upper bound), never silently enter it; fewer rows read than are there now means a loss.
    if extracted.rows < after.rows:
        return (
            Verdict.RETRY,
            f"{table}: extracted {extracted.rows} rows but the source has {after.rows} in the range",
        )
    return (
        Verdict.OK,
        f"{extracted.rows} rows; source has {after.rows} in the range now (updates move rows out)",
    )


REWRITE_KEY_CHUNK = 1000


def keys_dropped_by_rewrite(lake, plan: TablePlan, previous: dict, new_files: list[str]) -> set[tuple]:
    """Primary keys the committed batch has that its rewrite would lose from the lake: in the old
    batch, not in the new one and not in any other visible batch."""
    import pyarrow.parquet as pq

    table, key = plan.table, plan.primary_key

    def keys_of(paths) -> set[tuple]:
        out: set[tuple] = set()
        for path in paths:
            data = pq.read_table(path, columns=key, filesystem=lake.storage.fs)
            out.update(zip(*(data.column(k).to_pylist() for k in key), strict=True))
        return out

    batch_dir = lake.batch_dir(table, plan.batch_id)
    dropped = keys_of(f"{batch_dir}/{f['path']}" for f in previous["files"]) - keys_of(new_files)
    if dropped:
        others = [p for p in lake.committed_files(table) if not p.startswith(f"{batch_dir}/")]
        dropped -= keys_of(others)
    return dropped


def keys_still_in_source(session, plan: TablePlan, keys: set[tuple]) -> set[tuple]:
    charsets = {c.name: c.charset for c in plan.columns}
    found: set[tuple] = set()
    ordered = sorted(keys, key=repr)
    for start in range(0, len(ordered), REWRITE_KEY_CHUNK):
        literals = [
            "("
            + ", ".join(
                queries.key_literal(v, charsets.get(k)) for k, v in zip(plan.primary_key, key, strict=True)
            )
            + ")"
            for key in ordered[start : start + REWRITE_KEY_CHUNK]
        ]
        sql = queries.keys_present_sql(plan.database, plan.table, plan.primary_key, literals)
        found.update(tuple(row) for row in session.rows(sql))
    return found


def guard_rewrite(session, lake, plan: TablePlan, previous: dict | None, new_files: list[str]) -> None:
    """Refuse to replace a committed batch when that would drop keys the source still has. A batch
    that compaction already merged is not replaced (its rows stay in the compacted batch)."""
    if previous is None or plan.mode is ExtractionMode.FULL:  # a new snapshot is the source's whole content
        return
    if plan.batch_id not in lake.index(plan.table).batches:
        return
    lost = keys_still_in_source(session, plan, keys_dropped_by_rewrite(lake, plan, previous, new_files))
    if lost:
        sample = ", ".join(str(k if len(k) > 1 else k[0]) for k in sorted(lost, key=repr)[:5])
        raise ReconciliationError(
            f"{plan.table}: rewriting batch {plan.batch_id} would drop {len(lost)} keys the source "
            f"still has ({', '.join(plan.primary_key)} = {sample}{', ...' if len(lost) > 5 else ''}); "
            "the committed batch is kept"
        )
