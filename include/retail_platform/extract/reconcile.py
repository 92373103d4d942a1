"""Reconcile a batch with the source: row counts always, per-column checksums for full snapshots.

A column checksum is (non-null count, sum of CRC32 of each value's text). MySQL computes it
with ``SUM(CRC32(col))``; the extractor computes the same from the Arrow batches it wrote,
formatting values as MySQL does and encoding text in the column's character set. Floating
point and TIME columns are compared by count only (their text forms differ between the two).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import pyarrow as pa

from retail_platform.contract.types import parse_type
from retail_platform.extract import queries

_CHARSETS = {"latin1": "cp1252", "utf8": "utf-8", "utf8mb3": "utf-8", "utf8mb4": "utf-8", "ascii": "ascii"}


class ReconciliationError(RuntimeError):
    pass


@dataclass
class Stats:
    rows: int
    columns: dict[str, tuple[int, int]] | None = None  # name -> (non-null count, crc32 sum)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "columns": {k: list(v) for k, v in (self.columns or {}).items()} or None}


def checksummed_columns(plan: dict) -> list[str]:
    out = []
    for column in plan["columns"]:
        base = parse_type(column["type"]).base
        if base not in ("float", "double", "real", "time"):
            out.append(column["name"])
    return out


def source_stats(conn, plan: dict, lower, upper, *, with_checksums: bool) -> Stats:
    db, table, cursor = plan["database"], plan["table"], plan["cursor"]
    with conn.cursor() as cur:
        if with_checksums:
            names = checksummed_columns(plan)
            cur.execute(queries.checksum_sql(db, table, names))
            row = cur.fetchone()
            columns = {name: (int(row[1 + 2 * i]), int(row[2 + 2 * i])) for i, name in enumerate(names)}
            return Stats(int(row[0]), columns)
        cur.execute(queries.count_sql(db, table, cursor, lower, upper))
        return Stats(int(cur.fetchone()[0]))


def _fsp(declared: str) -> int:
    parsed = parse_type(declared)
    return parsed.args[0] if parsed.args else 0


@dataclass
class ArrowChecksums:
    """Accumulates the same checksums over the batches the extractor writes."""

    plan: dict
    rows: int = 0
    sums: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self):
        self._formatters = {}
        for column in self.plan["columns"]:
            if column["name"] in checksummed_columns(self.plan):
                self._formatters[column["name"]] = _formatter(column)
                self.sums[column["name"]] = [0, 0]

    def update(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for name, fmt in self._formatters.items():
            total = self.sums[name]
            crc = zlib.crc32
            values = [v for v in batch.column(name).to_pylist() if v is not None]
            total[0] += len(values)
            total[1] += sum(crc(fmt(v)) for v in values)

    def stats(self) -> Stats:
        return Stats(self.rows, {k: (v[0], v[1]) for k, v in self.sums.items()})


def _formatter(column: dict):
    parsed = parse_type(column["type"])
    base = parsed.base
    if base in ("datetime", "timestamp"):
        fsp = _fsp(column["type"])

        def fmt_ts(v):
            if v.tzinfo is not None:
                v = v.replace(tzinfo=None) - v.utcoffset()
            text = v.strftime("%Y-%m-%d %H:%M:%S")
            return (text + f".{v.microsecond:06d}"[: fsp + 1] if fsp else text).encode()

        return fmt_ts
    if base == "date":
        return lambda v: v.isoformat().encode()
    if pa.types.is_string(parsed.arrow):
        encoding = _CHARSETS.get((column.get("charset") or "utf8mb4").lower(), "utf-8")
        return lambda v: v.encode(encoding, errors="replace")
    if pa.types.is_binary(parsed.arrow):
        return lambda v: bytes(v)
    if pa.types.is_decimal(parsed.arrow):
        return lambda v: format(v, "f").encode()  # MySQL never uses exponents: 0.0000000001, not 1E-10
    return lambda v: str(v).encode()


ACCEPTED = ("ok", "changed_during_read")


def reconciliation_record(verdict: str, detail: str, source: Stats, attempts: int) -> dict:
    """What a batch manifest says of its reconciliation (both engines)."""
    return {"status": verdict, "detail": detail, "source": source.to_dict(), "attempts": attempts}


def verify(
    plan: dict, extracted: Stats, before: Stats, after: Stats, *, accept_changes: bool = False
) -> tuple[str, str]:
    """('ok' | 'changed_during_read' | 'retry' | 'mismatch', detail).

    A full snapshot of a table that keeps changing can never match checksums taken before and
    after it. The read itself is one consistent statement, so once a retry has changed too
    (``accept_changes``) the batch is accepted when its row count lies between the two counts,
    and the manifest says the checksums could not be compared."""
    table, mode = plan["table"], plan["mode"]
    if mode == "full":
        if before.rows != after.rows or before.columns != after.columns:
            low, high = sorted((before.rows, after.rows))
            if accept_changes and low <= extracted.rows <= high:
                return (
                    "changed_during_read",
                    f"{extracted.rows} rows; {table} changed during every read ({before.rows} -> "
                    f"{after.rows} rows): count within the source's, checksums not comparable",
                )
            if accept_changes:
                return (
                    "mismatch",
                    f"{table}: extracted {extracted.rows} rows, outside the source's "
                    f"{before.rows} -> {after.rows} during the read",
                )
            return "retry", f"{table} changed during the snapshot ({before.rows} -> {after.rows} rows)"
        if extracted.rows != after.rows:
            return "mismatch", f"{table}: extracted {extracted.rows} rows, the source has {after.rows}"
        differing = sorted(
            k for k, v in (after.columns or {}).items() if (extracted.columns or {}).get(k) != v
        )
        if differing:
            return "mismatch", f"{table}: checksums differ from the source for {', '.join(differing)}"
        return (
            "ok",
            f"{extracted.rows} rows; counts and checksums of {len(after.columns or {})} columns match",
        )
    if mode == "append_only":
        # Keys below the batch's upper bound never change: the count must match exactly.
        # A difference is retried first (a transaction committing out of key order), then fails.
        if extracted.rows != after.rows:
            return (
                "retry",
                f"{table}: extracted {extracted.rows} rows, the source has {after.rows} in the key range",
            )
        return "ok", f"{extracted.rows} rows; count matches the key range"
    # incremental: rows may leave the range while we read (an update moves their cursor past the
    # upper bound), never silently enter it; fewer rows read than are there now means a loss.
    if extracted.rows < after.rows:
        return (
            "retry",
            f"{table}: extracted {extracted.rows} rows but the source has {after.rows} in the range",
        )
    return "ok", f"{extracted.rows} rows; source has {after.rows} in the range now (updates move rows out)"


REWRITE_KEY_CHUNK = 1000


def keys_dropped_by_rewrite(lake, plan: dict, previous: dict, new_files: list[str]) -> set[tuple]:
    """Primary keys the committed batch has that its rewrite would lose from the lake: in the old
    batch, not in the new one and not in any other committed batch."""
    import pyarrow.parquet as pq

    table, batch_id, key = plan["table"], plan["batch_id"], plan["primary_key"]

    def keys_of(paths) -> set[tuple]:
        out: set[tuple] = set()
        for path in paths:
            data = pq.read_table(path, columns=key, filesystem=lake.storage.fs)
            out.update(zip(*(data.column(k).to_pylist() for k in key), strict=True))
        return out

    batch_dir = lake.batch_dir(table, batch_id)
    dropped = keys_of(f"{batch_dir}/{f['path']}" for f in previous["files"]) - keys_of(new_files)
    if dropped:
        others = [p for p in lake.committed_files(table) if not p.startswith(f"{batch_dir}/")]
        dropped -= keys_of(others)
    return dropped


def keys_still_in_source(conn, plan: dict, keys: set[tuple]) -> set[tuple]:
    found: set[tuple] = set()
    ordered = sorted(keys, key=repr)
    for start in range(0, len(ordered), REWRITE_KEY_CHUNK):
        chunk = ordered[start : start + REWRITE_KEY_CHUNK]
        sql = queries.keys_present_sql(plan["database"], plan["table"], plan["primary_key"], len(chunk))
        with conn.cursor() as cur:
            cur.execute(sql, [v for key in chunk for v in key])
            found.update(tuple(row) for row in cur.fetchall())
    return found


def guard_rewrite(conn, lake, plan: dict, previous: dict | None, new_files: list[str]) -> None:
    """Refuse to replace a committed batch when that would drop keys the source still has."""
    if previous is None or plan["mode"] == "full":  # a new snapshot is the source's whole content
        return
    lost = keys_still_in_source(conn, plan, keys_dropped_by_rewrite(lake, plan, previous, new_files))
    if lost:
        sample = ", ".join(str(k if len(k) > 1 else k[0]) for k in sorted(lost, key=repr)[:5])
        raise ReconciliationError(
            f"{plan['table']}: rewriting batch {plan['batch_id']} would drop {len(lost)} keys the source "
            f"still has ({', '.join(plan['primary_key'])} = {sample}{', ...' if len(lost) > 5 else ''}); "
            "the committed batch is kept"
        )
