"""Atomic batches in the raw lake, and each table's index of what readers see.

Layout, under the lake root::

    raw/<source>/<table>/batch_id=<batch_id>/part-<attempt>-<n>.parquet   data, written first
    raw/<source>/<table>/batch_id=<batch_id>/_manifest.json              the batch's record
    raw/<source>/<table>/_index.json                                     the table's index (writers)
    raw/<source>/<table>/_committed.manifest                             what readers see (Redshift
                                                                          Spectrum's manifest format)
    _state/<source>/watermarks/<table>.json                              moves after the commit

A commit writes the data files, then the batch's manifest, then switches the index: one small
document updated from the previous index and this batch alone (never by re-reading every
manifest), so a commit costs the same after ten batches or thousands. The readers' list is then
written from the index. A batch is seen whole or not at all; files of a crashed attempt are never
read, and are removed by the next commit of that batch. A rerun of the same interval writes new
files and replaces the batch's entry in one step. Compaction (``lake.compaction``) switches the
same index: merged batches leave it for a list of superseded files, removed after a grace period.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from retail_platform.extraction_modes import ExtractionMode
from retail_platform.lake.storage import LakeStorage
from retail_platform.settings import Settings

RAW_ZONE = "raw"
MANIFEST = "_manifest.json"
COMMITTED_INDEX = "_committed.manifest"
TABLE_INDEX = "_index.json"
FORMAT_VERSION = 1
COMPACTED = "compacted"  # the kind of a batch compaction wrote (not an extraction mode)


class IndexConflict(RuntimeError):
    """The index changed under a compaction: a batch it merged was rewritten meanwhile."""


def batch_id_for(start: datetime, end: datetime) -> str:
    """Batches are keyed by the data interval, so a rerun or backfill rewrites the same batch."""
    return f"{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}"


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat()


def index_entry(manifest: dict) -> dict:
    """What the index keeps of a batch: enough to decide visibility and to list its files."""
    entry = {
        "mode": manifest["mode"],
        "extracted_at": manifest["extracted_at"],
        "attempt": manifest["attempt"],
        "files": [{"path": f["path"], "bytes": f["bytes"], "rows": f["rows"]} for f in manifest["files"]],
    }
    if "compaction" in manifest:
        entry["merged"] = manifest["compaction"]["merged"]
    return entry


@dataclass
class TableIndex:
    """The batches of a table that are committed, and the superseded files awaiting removal."""

    table: str
    generation: int = 0
    batches: dict[str, dict] = field(default_factory=dict)
    superseded: list[dict] = field(default_factory=list)

    @classmethod
    def from_doc(cls, table: str, doc: dict | None) -> TableIndex:
        if doc is None:
            return cls(table)
        return cls(table, doc["generation"], doc["batches"], doc.get("superseded", []))

    def to_doc(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "table": self.table,
            "generation": self.generation,
            "updated": utcnow_iso(),
            "batches": self.batches,
            "superseded": self.superseded,
        }

    def visible(self) -> list[str]:
        """Batch ids readers see. A full snapshot supersedes every batch extracted before it (rows
        deleted at the source disappear); batches extracted after it are added (a table can change
        mode, e.g. when its cursor column appears). Staging keeps each key's latest version."""
        fulls = [b for b, e in self.batches.items() if e["mode"] == ExtractionMode.FULL]
        if not fulls:
            return sorted(self.batches)
        latest = max(fulls, key=lambda b: self.batches[b]["extracted_at"])
        since = self.batches[latest]["extracted_at"]
        later = [
            b
            for b, e in self.batches.items()
            if e["mode"] != ExtractionMode.FULL and e["extracted_at"] > since
        ]
        return [latest, *sorted(later)]

    def hidden(self) -> list[str]:
        shown = set(self.visible())
        return sorted(b for b in self.batches if b not in shown)

    def with_batch(self, batch_id: str, entry: dict) -> TableIndex:
        return TableIndex(
            self.table, self.generation + 1, self.batches | {batch_id: entry}, list(self.superseded)
        )

    def replacing(self, expected: dict[str, str], batch_id: str | None, entry: dict | None) -> TableIndex:
        """Compaction's switch: the batches in ``expected`` (id -> attempt) leave for the superseded
        list and ``entry`` (when given) takes their place. Raises IndexConflict when one of them was
        rewritten or removed since the compaction read the index."""
        changed = sorted(b for b, a in expected.items() if self.batches.get(b, {}).get("attempt") != a)
        if changed:
            raise IndexConflict(f"{self.table}: batches {', '.join(changed)} changed during compaction")
        now = utcnow_iso()
        superseded = list(self.superseded) + [
            {
                "batch_id": b,
                "attempt": a,
                "files": [f["path"] for f in self.batches[b]["files"]],
                "since": now,
            }
            for b, a in sorted(expected.items())
        ]
        batches = {b: e for b, e in self.batches.items() if b not in expected}
        if batch_id is not None:
            batches[batch_id] = entry
        return TableIndex(self.table, self.generation + 1, batches, superseded)

    def without_superseded(self, removed: list[dict]) -> TableIndex:
        gone = {(s["batch_id"], s["attempt"]) for s in removed}
        kept = [s for s in self.superseded if (s["batch_id"], s["attempt"]) not in gone]
        return TableIndex(self.table, self.generation + 1, dict(self.batches), kept)


@dataclass(frozen=True)
class WrittenFile:
    """A data file as written: its path in the lake's filesystem, rows, size and sha256."""

    path: str
    rows: int
    bytes: int
    sha256: str


@dataclass
class RawLake:
    storage: LakeStorage
    source: str

    # ------------------------------------------------------------------ paths
    def table_dir(self, table: str) -> str:
        return self.storage.path(RAW_ZONE, self.source, table)

    def batch_dir(self, table: str, batch_id: str) -> str:
        return f"{self.table_dir(table)}/batch_id={batch_id}"

    def manifest_path(self, table: str, batch_id: str) -> str:
        return f"{self.batch_dir(table, batch_id)}/{MANIFEST}"

    def data_file(self, table: str, batch_id: str, attempt: str, n: int) -> str:
        return f"{self.batch_dir(table, batch_id)}/part-{attempt}-{n:05d}.parquet"

    def index_path(self, table: str) -> str:
        return f"{self.table_dir(table)}/{TABLE_INDEX}"

    def readers_index_path(self, table: str) -> str:
        return f"{self.table_dir(table)}/{COMMITTED_INDEX}"

    def watermark_path(self, table: str) -> str:
        return self.storage.path("_state", self.source, "watermarks", f"{table}.json")

    # ------------------------------------------------------------------ reading
    def read_manifest(self, table: str, batch_id: str) -> dict | None:
        return self.storage.read_json(self.manifest_path(table, batch_id))

    def batch_ids(self, table: str) -> list[str]:
        ids = []
        for info in self.storage.list(self.table_dir(table)):
            name = info.base_name
            if info.is_file or not name.startswith("batch_id="):
                continue
            ids.append(name.removeprefix("batch_id="))
        return sorted(ids)

    def committed_batches(self, table: str) -> list[dict]:
        """Manifests of every batch whose manifest exists (visible, hidden or not yet removed),
        oldest interval first. Reads every manifest: for operators and tests, not commits."""
        out = []
        for batch_id in self.batch_ids(table):
            manifest = self.read_manifest(table, batch_id)
            if manifest is not None:
                out.append(manifest)
        return out

    def index(self, table: str) -> TableIndex:
        doc = self.storage.read_document(self.index_path(table))
        if doc is None:
            return self.index_from_manifests(table)
        return TableIndex.from_doc(table, doc)

    def index_from_manifests(self, table: str) -> TableIndex:
        """The index of a lake written before indexes existed (or lost): every manifest once, less
        the batches a compacted batch merged (same attempt)."""
        manifests = {m["batch_id"]: m for m in self.committed_batches(table)}
        merged = {
            (b, a) for m in manifests.values() for b, a in m.get("compaction", {}).get("merged", {}).items()
        }
        batches = {b: index_entry(m) for b, m in manifests.items() if (b, m["attempt"]) not in merged}
        return TableIndex(table, 0, batches, [])

    def visible_manifests(self, table: str) -> list[dict]:
        index = self.index(table)
        return [m for m in (self.read_manifest(table, b) for b in index.visible()) if m is not None]

    def committed_files(self, table: str) -> list[str]:
        """Absolute paths (in the lake's filesystem) of the data files readers may see."""
        return self._files_of(self.index(table), table)

    def _files_of(self, index: TableIndex, table: str) -> list[str]:
        return [
            f"{self.batch_dir(table, b)}/{f['path']}"
            for b in index.visible()
            for f in index.batches[b]["files"]
        ]

    def readers_files(self, table: str) -> set[str]:
        """The files the readers' list names now (what a running query may be reading)."""
        doc = self.storage.read_document(self.readers_index_path(table)) or {"entries": []}
        prefix = "s3://" if not self.storage.is_local else ""
        return {e["url"].removeprefix(prefix) for e in doc["entries"]}

    def read_table(self, table: str) -> pa.Table | None:
        """All visible rows of a table; batches written before a column was added get nulls for it."""
        files = self.committed_files(table)
        if not files:
            return None
        parts = [pq.read_table(path, filesystem=self.storage.fs) for path in files]
        return pa.concat_tables(parts, promote_options="permissive")

    def watermark(self, table: str) -> dict | None:
        return self.storage.read_json(self.watermark_path(table))

    # ------------------------------------------------------------------ writing
    def file_entry(self, table: str, batch_id: str, path: str, rows: int) -> dict:
        """A manifest's record of a file written by another process (Spark): read back to hash it."""
        data = self.storage.read_bytes(path)
        written = WrittenFile(path, rows, len(data), hashlib.sha256(data).hexdigest())
        return self.written_entry(table, batch_id, written)

    def written_entry(self, table: str, batch_id: str, written: WrittenFile) -> dict:
        """A manifest's record of one data file: path relative to the batch folder, size, checksum."""
        return {
            "path": written.path[len(self.batch_dir(table, batch_id)) + 1 :],
            "rows": written.rows,
            "bytes": written.bytes,
            "sha256": written.sha256,
        }

    def commit(self, manifest: dict, *, watermark: dict | None = None) -> None:
        """Publish a batch: manifest, then the index switch (the commit point), then the readers'
        list, then the watermark."""
        table, batch_id = manifest["table"], manifest["batch_id"]
        manifest = manifest | {"format_version": FORMAT_VERSION}
        for entry in manifest["files"]:
            path = f"{self.batch_dir(table, batch_id)}/{entry['path']}"
            if not self.storage.exists(path):
                raise RuntimeError(
                    f"{table} batch {batch_id}: data file {entry['path']} missing before commit"
                )
        self.storage.write_json_atomic(self.manifest_path(table, batch_id), manifest)
        entry = index_entry(manifest)
        index = self.switch_index(table, lambda current: current.with_batch(batch_id, entry))
        if watermark is not None:
            previous = self.watermark(table)
            # The watermark only moves forward; a backfill of an old interval leaves it alone.
            if previous is None or _later(watermark.get("high_water"), previous.get("high_water")):
                self.storage.write_json_atomic(self.watermark_path(table), watermark)
        # Files of this batch a compaction superseded stay for their grace period.
        superseded = {path for s in index.superseded if s["batch_id"] == batch_id for path in s["files"]}
        self.remove_orphans(table, batch_id, keep={f["path"] for f in manifest["files"]} | superseded)

    def switch_index(self, table: str, change) -> TableIndex:
        """Update the index with ``change(index) -> index`` (compare-and-swap), then write the
        readers' list from it. Should another writer's list land after ours, ours is written again
        from the newest index, so the list never stays behind the index."""

        def update(doc: dict | None) -> dict:
            current = TableIndex.from_doc(table, doc) if doc is not None else self.index_from_manifests(table)
            return change(current).to_doc()

        if self.storage.is_local:
            # The readers' list is written under the index's lock: lists land in index order, and
            # a commit costs one read of the index, not two.
            doc = self.storage.update_json(
                self.index_path(table),
                update,
                while_locked=lambda new: self.publish_readers_index(table, TableIndex.from_doc(table, new)),
            )
            return TableIndex.from_doc(table, doc)
        index = TableIndex.from_doc(table, self.storage.update_json(self.index_path(table), update))
        while True:
            self.publish_readers_index(table, index)
            newest = TableIndex.from_doc(table, self.storage.read_document(self.index_path(table)))
            if newest.generation <= index.generation:
                return index
            index = newest

    def catch_up_readers_index(self, table: str) -> bool:
        """Rewrite the readers' list when it names other files than the index: a writer killed
        between its index switch (the commit point) and the list leaves readers on the previous
        set, whole, until this runs. Returns whether the list was behind."""

        def catch_up() -> bool:
            index = self.index(table)
            if self.readers_files(table) == set(self._files_of(index, table)):
                return False
            self.publish_readers_index(table, index)
            return True

        if self.storage.is_local:
            with self.storage.locked(self.index_path(table)):
                return catch_up()
        return catch_up()

    def publish_readers_index(self, table: str, index: TableIndex) -> None:
        """The visible files in Redshift Spectrum's manifest format (an external table's LOCATION),
        which the DuckDB sources read too."""
        prefix = self.storage.url(self.table_dir(table))  # one prefix: thousands of batches
        entries = [
            {"url": f"{prefix}/batch_id={b}/{f['path']}", "mandatory": True,
             "meta": {"content_length": f["bytes"]}}
            for b in index.visible()
            for f in index.batches[b]["files"]
        ]  # fmt: skip
        self.storage.write_document_atomic(self.readers_index_path(table), {"entries": entries})

    def remove_orphans(self, table: str, batch_id: str, keep: set[str]) -> list[str]:
        """Delete files of crashed or superseded attempts of a batch (never read: not in the manifest).

        ``keep`` holds paths relative to the batch folder (Spark writes into a sub-folder)."""
        removed = []
        batch_dir = self.batch_dir(table, batch_id)
        for info in self.storage.list(batch_dir, recursive=True):
            relative = info.path[len(batch_dir) + 1 :]
            if info.is_file and relative not in keep and relative != MANIFEST:
                self.storage.delete(info.path)
                removed.append(relative)
        return removed


def lake_for(settings: Settings, source: str) -> RawLake:
    """A source's raw lake under the settings' lake root."""
    return RawLake(LakeStorage.from_uri(settings.lake_uri, s3_endpoint_url=settings.s3_endpoint_url), source)


def _later(new, old) -> bool:
    if old is None:
        return new is not None
    if new is None:
        return False
    # Watermarks are ISO timestamps or integers; both order naturally within their kind.
    if isinstance(new, (int, float)) and isinstance(old, (int, float)):
        return new > old
    return str(new) > str(old)
