"""Atomic batches in the raw lake.

Layout, under the lake root::

    raw/<source>/<table>/batch_id=<batch_id>/part-<attempt>-<n>.parquet   data, written first
    raw/<source>/<table>/batch_id=<batch_id>/_manifest.json              the commit, written last
    raw/<source>/<table>/_committed.manifest                             the committed files (Redshift
                                                                          Spectrum manifest format)
    _state/<source>/watermarks/<table>.json                              moves after the commit

A batch exists for readers only once its manifest exists, and the manifest lists the exact
data files of the attempt that wrote it: files of a crashed or superseded attempt are never
read, and are removed after the next commit of that batch. A rerun of the same interval
writes new files and replaces the manifest in one atomic step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

from retail_platform.lake.storage import LakeStorage

MANIFEST = "_manifest.json"
COMMITTED_INDEX = "_committed.manifest"
FORMAT_VERSION = 1


def batch_id_for(start: datetime, end: datetime) -> str:
    """Batches are keyed by the data interval, so a rerun or backfill rewrites the same batch."""
    return f"{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}"


@dataclass
class RawLake:
    storage: LakeStorage
    source: str = "classicmodels"

    # ------------------------------------------------------------------ paths
    def table_dir(self, table: str) -> str:
        return self.storage.path("raw", self.source, table)

    def batch_dir(self, table: str, batch_id: str) -> str:
        return f"{self.table_dir(table)}/batch_id={batch_id}"

    def manifest_path(self, table: str, batch_id: str) -> str:
        return f"{self.batch_dir(table, batch_id)}/{MANIFEST}"

    def data_file(self, table: str, batch_id: str, attempt: str, n: int) -> str:
        return f"{self.batch_dir(table, batch_id)}/part-{attempt}-{n:05d}.parquet"

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
        """Manifests of committed batches, oldest interval first."""
        out = []
        for batch_id in self.batch_ids(table):
            manifest = self.read_manifest(table, batch_id)
            if manifest is not None:
                out.append(manifest)
        return out

    def committed_files(self, table: str) -> list[str]:
        """Absolute paths (in the lake's filesystem) of the data files readers may see.

        A full snapshot supersedes every batch extracted before it (rows deleted at the source
        disappear); batches extracted after it are added (a table can change mode, e.g. when its
        cursor column appears). Staging keeps the latest version of each key among these files.
        """
        manifests = self.committed_batches(table)
        fulls = [m for m in manifests if m.get("mode") == "full"]
        if fulls:
            latest_full = max(fulls, key=lambda m: m["extracted_at"])
            manifests = [latest_full] + [
                m
                for m in manifests
                if m.get("mode") != "full" and m["extracted_at"] > latest_full["extracted_at"]
            ]
        return [f"{self.batch_dir(table, m['batch_id'])}/{f['path']}" for m in manifests for f in m["files"]]

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
        """A manifest's record of one data file: path relative to the batch folder, size, checksum."""
        data = self.storage.read_bytes(path)
        return {
            "path": path[len(self.batch_dir(table, batch_id)) + 1 :],
            "rows": rows,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    def commit(self, manifest: dict, *, watermark: dict | None = None) -> None:
        """Publish a batch: manifest (the commit point), then the readers' index, then the watermark."""
        table, batch_id = manifest["table"], manifest["batch_id"]
        manifest = manifest | {"format_version": FORMAT_VERSION}
        for entry in manifest["files"]:
            path = f"{self.batch_dir(table, batch_id)}/{entry['path']}"
            if not self.storage.exists(path):
                raise RuntimeError(
                    f"{table} batch {batch_id}: data file {entry['path']} missing before commit"
                )
        self.storage.write_json_atomic(self.manifest_path(table, batch_id), manifest)
        self.rebuild_index(table)
        if watermark is not None:
            previous = self.watermark(table)
            # The watermark only moves forward; a backfill of an old interval leaves it alone.
            if previous is None or _later(watermark.get("high_water"), previous.get("high_water")):
                self.storage.write_json_atomic(self.watermark_path(table), watermark)
        self.remove_orphans(table, batch_id, keep={f["path"] for f in manifest["files"]})

    def rebuild_index(self, table: str) -> None:
        """The committed files in Redshift Spectrum's manifest format (an external table's LOCATION)."""
        entries = [
            {
                "url": self.storage.url(path),
                "mandatory": True,
                "meta": {"content_length": self.storage.size(path)},
            }
            for path in self.committed_files(table)
        ]
        self.storage.write_json_atomic(f"{self.table_dir(table)}/{COMMITTED_INDEX}", {"entries": entries})

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


def _later(new, old) -> bool:
    if old is None:
        return new is not None
    if new is None:
        return False
    # Watermarks are ISO timestamps or integers; both order naturally within their kind.
    if isinstance(new, (int, float)) and isinstance(old, (int, float)):
        return new > old
    return str(new) > str(old)
