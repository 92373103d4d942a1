"""Compaction: merge a table's committed batches into one, keeping the lake's meaning exactly.

What readers see after a compaction is what they saw before, in fewer files:

* incremental tables: the latest version of each primary key, chosen as staging chooses it
  (``latest_per_key``: the cursor column descending, nulls last, then ``_extracted_at``, then
  ``_batch_id``); each row keeps its own ``_extracted_at`` and ``_batch_id``;
* append-only tables: every row (staging drops the lookback's overlaps itself);
* full-snapshot tables: the newest snapshot (older ones are hidden already: they are only removed).

The switch follows the commit's rule: the compacted batch's data files, then its manifest, then
one compare-and-swap of the table's index (merged batches leave it, the compacted one enters),
then the readers' list. It fails (and is retried) if a batch it merged was rewritten meanwhile;
an extraction commit of another batch at the same time is kept. Merged batches' files are removed
only after the grace period (``collect_garbage``), so a query that started before the switch
finishes. A compaction killed at any point leaves the index as it was, or switched whole; its
half-written folder is removed by a later garbage collection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from retail_platform.extraction_modes import ExtractionMode
from retail_platform.lake.batches import (
    COMPACTED,
    FORMAT_VERSION,
    IndexConflict,
    RawLake,
    TableIndex,
    index_entry,
)
from retail_platform.lake.parquet import BatchFileWriter
from retail_platform.lake.settings import LakeSettings

log = logging.getLogger(__name__)

BOOKKEEPING = ("_extracted_at", "_batch_id")
BATCH_ROWS = 131_072
CONFLICT_ATTEMPTS = 2  # a batch rewritten during the merge: read the index again and redo it once


class MergeRule(StrEnum):
    LATEST_PER_KEY = "latest_per_key"
    ALL_ROWS = "all_rows"


@dataclass(frozen=True)
class TableRule:
    table: str
    mode: ExtractionMode
    rule: MergeRule
    key: tuple[str, ...]
    version_column: str | None = None


def rule_for(contract, table: str) -> TableRule:
    """The merge rule of a contract's table (``contract.model.Contract``: passed in, never imported,
    as the contract's room builds on the lake)."""
    spec = contract.tables[table]
    mode = spec.extraction.mode
    if mode is ExtractionMode.APPEND_ONLY:
        return TableRule(table, mode, MergeRule.ALL_ROWS, tuple(spec.primary_key))
    version = spec.extraction.cursor if mode is ExtractionMode.INCREMENTAL else None
    return TableRule(table, mode, MergeRule.LATEST_PER_KEY, tuple(spec.primary_key), version)


@dataclass
class CompactionResult:
    source: str
    table: str
    batch_id: str | None = None
    merged: int = 0
    superseded_hidden: int = 0
    rows_in: int = 0
    rows_out: int = 0
    removed_files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self) | {"removed_files": len(self.removed_files)}


def compacted_batch_id(now: datetime) -> str:
    return f"{COMPACTED}-{now:%Y%m%dT%H%M%S%fZ}"


def compact_table(lake: RawLake, rule: TableRule, *, min_batches: int = 2) -> CompactionResult:
    """Merge the table's visible batches into one (when there are at least ``min_batches``) and
    supersede its hidden ones (old full snapshots); returns what was done."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return _compact_once(lake, rule, min_batches)
        except IndexConflict as exc:
            if attempt == CONFLICT_ATTEMPTS:
                raise
            log.warning("%s; merging again from the new index", exc)
    raise AssertionError("unreachable")


def _compact_once(lake: RawLake, rule: TableRule, min_batches: int) -> CompactionResult:
    started = time.perf_counter()
    result = CompactionResult(lake.source, rule.table)
    if lake.catch_up_readers_index(rule.table):
        log.warning(
            "%s.%s: readers' list was behind the index (a writer died); caught up", lake.source, rule.table
        )
    index = lake.index(rule.table)
    visible, hidden = index.visible(), index.hidden()
    merge = len(visible) >= max(min_batches, 2)
    if not merge and not hidden:
        result.note = f"{len(visible)} visible batch(es): nothing to compact"
        return result
    expected = {b: index.batches[b]["attempt"] for b in (visible if merge else []) + hidden}
    batch_id = entry = None
    if merge:
        manifest = _write_compacted(lake, rule, index, visible)
        batch_id, entry = manifest["batch_id"], index_entry(manifest)
        result.rows_in, result.rows_out = manifest["compaction"]["rows_in"], manifest["row_count"]
    lake.switch_index(rule.table, lambda current: current.replacing(expected, batch_id, entry))
    result.batch_id, result.merged, result.superseded_hidden = (
        batch_id,
        len(visible) if merge else 0,
        len(hidden),
    )
    result.seconds = round(time.perf_counter() - started, 3)
    log.info("%s.%s compacted: %s", lake.source, rule.table, result.to_dict())
    return result


def unified_schema(lake: RawLake, paths: list[str]) -> pa.Schema:
    """Every column any batch has (newest batch's order first; bookkeeping columns last), with
    types widened as readers widen them; batches without a column read it as null."""
    schemas = [pq.read_schema(p, filesystem=lake.storage.fs) for p in reversed(paths)]
    merged = pa.unify_schemas(schemas, promote_options="permissive")
    fields = [f for f in merged if f.name not in BOOKKEEPING] + [merged.field(n) for n in BOOKKEEPING]
    return pa.schema(fields)


def _write_compacted(lake: RawLake, rule: TableRule, index: TableIndex, visible: list[str]) -> dict:
    now = datetime.now(UTC)
    batch_id, attempt = compacted_batch_id(now), uuid.uuid4().hex[:12]
    paths = [
        f"{lake.batch_dir(rule.table, b)}/{f['path']}" for b in visible for f in index.batches[b]["files"]
    ]
    schema = unified_schema(lake, paths)
    lake.storage.ensure_dir(lake.batch_dir(rule.table, batch_id))
    writer = BatchFileWriter(
        lake.storage.fs, schema, lambda n: lake.data_file(rule.table, batch_id, attempt, n)
    )
    dataset = ds.dataset(paths, schema=schema, filesystem=lake.storage.fs, format="parquet")
    try:
        batches = (
            _all_rows(dataset) if rule.rule is MergeRule.ALL_ROWS else _latest_per_key(dataset, rule, schema)
        )
        for batch in batches:
            writer.write(batch.cast(schema))
        written = writer.close()
    except BaseException:
        writer.abort()
        raise
    manifest = {
        "source": lake.source,
        "table": rule.table,
        "batch_id": batch_id,
        "mode": COMPACTED,
        "declared_mode": rule.mode.value,
        "row_count": sum(f.rows for f in written),
        "primary_key": list(rule.key),
        "columns": [{"name": f.name, "arrow_type": str(f.type), "nullable": f.nullable} for f in schema],
        "files": [lake.written_entry(rule.table, batch_id, f) for f in written],
        "compaction": {
            "rule": rule.rule.value,
            "version_column": rule.version_column,
            "merged": {b: index.batches[b]["attempt"] for b in visible},
            "rows_in": sum(f["rows"] for b in visible for f in index.batches[b]["files"]),
        },
        "attempt": attempt,
        # Where the merged batches stood: a full snapshot extracted later still supersedes them.
        "extracted_at": max(index.batches[b]["extracted_at"] for b in visible),
        "compacted_at": now.isoformat(),
        "format_version": FORMAT_VERSION,
    }
    lake.storage.write_json_atomic(lake.manifest_path(rule.table, batch_id), manifest)
    return manifest


def _all_rows(dataset: ds.Dataset):
    yield from dataset.to_batches(batch_size=BATCH_ROWS)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _latest_per_key(dataset: ds.Dataset, rule: TableRule, schema: pa.Schema):
    """The rows staging's latest_per_key keeps, streamed out of DuckDB (which spills to disk)."""
    import duckdb

    order = [f"{_quote(rule.version_column)} desc nulls last"] if rule.version_column in schema.names else []
    order += ['"_extracted_at" desc', '"_batch_id" desc']
    sql = (
        f"select * from batches qualify row_number() over (partition by "
        f"{', '.join(_quote(k) for k in rule.key)} order by {', '.join(order)}) = 1"
    )
    with tempfile.TemporaryDirectory(prefix="compaction-") as spill:
        conn = duckdb.connect(config={"threads": 2, "memory_limit": "1GB", "temp_directory": spill})
        try:
            conn.execute("set TimeZone = 'UTC'")
            conn.register("batches", dataset)
            yield from conn.sql(sql).to_arrow_reader(BATCH_ROWS)
        finally:
            conn.close()


def collect_garbage(lake: RawLake, table: str, *, grace: timedelta, now: datetime | None = None) -> list[str]:
    """Remove superseded files older than the grace period (never a file readers' list still names),
    and folders of compactions that were killed before their switch; returns the paths removed."""
    now = now or datetime.now(UTC)
    # Files the list named before a catch-up stay this round: a query may be reading them.
    live = lake.readers_files(table)
    lake.catch_up_readers_index(table)
    index = lake.index(table)
    due = [s for s in index.superseded if datetime.fromisoformat(s["since"]) <= now - grace]
    live |= set(lake.committed_files(table))
    removed, done = [], []
    for entry in due:
        gone = _remove_superseded(lake, table, entry, live, index)
        removed += gone
        if len(gone) == len(entry["files"]):  # an entry with a file still live waits a round
            done.append(entry)
    if done:
        lake.switch_index(table, lambda current: current.without_superseded(done))
    removed += _remove_abandoned_compactions(lake, table, index, now - grace)
    return removed


def _remove_superseded(
    lake: RawLake, table: str, entry: dict, live: set[str], index: TableIndex
) -> list[str]:
    """Delete the entry's files no reader may see, and its manifest once none is left; returns the
    files deleted."""
    batch_dir = lake.batch_dir(table, entry["batch_id"])
    removed = []
    for relative in entry["files"]:
        path = f"{batch_dir}/{relative}"
        if path not in live:
            lake.storage.delete(path)
            removed.append(path)
    if len(removed) < len(entry["files"]):
        return removed
    manifest = lake.read_manifest(table, entry["batch_id"])
    gone_for_good = entry["batch_id"] not in index.batches
    if gone_for_good and manifest is not None and manifest.get("attempt") == entry["attempt"]:
        lake.storage.delete(lake.manifest_path(table, entry["batch_id"]))
        _remove_empty_dir(lake, batch_dir)
    return removed


def _remove_abandoned_compactions(
    lake: RawLake, table: str, index: TableIndex, older_than: datetime
) -> list[str]:
    known = set(index.batches) | {s["batch_id"] for s in index.superseded}
    removed = []
    for batch_id in lake.batch_ids(table):
        if not batch_id.startswith(f"{COMPACTED}-") or batch_id in known:
            continue
        infos = lake.storage.list(lake.batch_dir(table, batch_id), recursive=True)
        if any(i.mtime is not None and i.mtime > older_than for i in infos):
            continue  # perhaps still being written: left for a later collection
        for info in infos:
            if info.is_file:
                lake.storage.delete(info.path)
                removed.append(info.path)
        _remove_empty_dir(lake, lake.batch_dir(table, batch_id))
    return removed


def _remove_empty_dir(lake: RawLake, path: str) -> None:
    if lake.storage.is_local:  # S3 has no folders
        with contextlib.suppress(OSError):
            os.rmdir(path)


def compact_source(
    settings: LakeSettings, contract, *, tables: list[str] | None = None
) -> list[CompactionResult]:
    """Compact every table of a source (or ``tables``), then collect its garbage."""
    from retail_platform.lake.batches import lake_for

    lake = lake_for(settings.platform, contract.source.name)
    results = []
    for table in tables or sorted(contract.tables):
        result = compact_table(lake, rule_for(contract, table), min_batches=settings.min_batches)
        result.removed_files = collect_garbage(lake, table, grace=settings.grace)
        results.append(result)
    return results
