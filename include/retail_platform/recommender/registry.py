"""The model registry in the lake: ``ml/models/recommender/version=<v>/``, one folder per trained version.

Each holds the embeddings as Parquet (``user_vectors``, ``item_vectors``: key and a 32-float
``embedding``), the feature vectors (``user_features``, ``item_features``: the vocabularies), the
LightFM arrays (``lightfm.npz``), the encoder's scalers (``encoder.json``), and ``_manifest.json``
written last (a version without it does not exist): training build, code version, parameters,
evaluation, the gate's decision, timings, and each file's size and sha256. Every version is kept,
refused ones too (for analysis, and so any version can be published later), until the retention
window has passed; the current and previous published versions are never pruned.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from retail_platform.lake.storage import LakeStorage
from retail_platform.recommender.model import FittedModel
from retail_platform.settings import Settings
from retail_platform.vectors.model import DIMENSIONS
from retail_platform.vectors.store import VersionPayload

MANIFEST = "_manifest.json"
VECTOR_FILES = {
    "user_vectors": "customerNumber",
    "item_vectors": "productCode",
    "user_features": "feature",
    "item_features": "feature",
}


class VersionNotFound(LookupError):
    pass


def new_version_id(now: datetime | None = None) -> str:
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%S%fZ}"


def code_version() -> dict:
    """What code trained a version: a digest of the recommender package, the encoder and its session
    fold, and the git commit if any."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    vectors = package.parent / "vectors"
    for path in [*sorted(package.glob("*.py")), vectors / "encoder.py", vectors / "session.py"]:
        digest.update(path.name.encode() + path.read_bytes())
    commit = None
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True, timeout=5
        )
        commit = result.stdout.strip() or None if result.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"package_sha256": digest.hexdigest()[:16], "git_commit": commit}


def _vectors_table(key: str, keys, vectors: np.ndarray) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), pa.float32())
    return pa.table({key: keys, "embedding": pa.FixedSizeListArray.from_arrays(flat, DIMENSIONS)})


def _vectors_of(table: pa.Table) -> np.ndarray:
    column = table.column("embedding").combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, DIMENSIONS)


@dataclass
class Registry:
    storage: LakeStorage

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(LakeStorage.from_uri(settings.lake_uri, s3_endpoint_url=settings.s3_endpoint_url))

    @property
    def base(self) -> str:
        return self.storage.path("ml", "models", "recommender")

    def folder(self, version: str) -> str:
        return f"{self.base}/version={version}"

    # ------------------------------------------------------------------ writing
    def _write(self, folder: str, name: str, data: bytes) -> dict:
        self.storage.write_bytes_atomic(f"{folder}/{name}", data)
        return {"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def write(self, version: str, model: FittedModel, manifest: dict) -> str:
        """Write a version's files, then its manifest (the commit point); returns its URL."""
        folder = self.folder(version)
        self.storage.ensure_dir(folder)
        tables = {
            "user_vectors": _vectors_table("customerNumber", model.customer_numbers, model.user_vectors),
            "item_vectors": _vectors_table("productCode", list(model.product_codes), model.item_vectors),
            "user_features": _vectors_table(
                "feature", list(model.user_feature_names), model.user_feature_vectors
            ),
            "item_features": _vectors_table(
                "feature", list(model.item_feature_names), model.item_feature_vectors
            ),
        }
        files = []
        for name, table in tables.items():
            buffer = io.BytesIO()
            pq.write_table(table, buffer, compression="zstd")
            files.append(self._write(folder, f"{name}.parquet", buffer.getvalue()))
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **model.lightfm_state)
        files.append(self._write(folder, "lightfm.npz", buffer.getvalue()))
        files.append(self._write(folder, "encoder.json", json.dumps(model.spec, indent=2).encode()))
        doc = manifest | {
            "version": version,
            "files": files,
            "counts": {"customers": len(model.customer_numbers), "products": len(model.product_codes)},
        }
        self.storage.write_json_atomic(f"{folder}/{MANIFEST}", doc)
        return self.storage.url(folder)

    # ------------------------------------------------------------------ reading
    def manifest(self, version: str) -> dict | None:
        return self.storage.read_json(f"{self.folder(version)}/{MANIFEST}")

    def versions(self) -> list[dict]:
        """Manifests of every committed version, oldest first."""
        out = []
        for info in self.storage.list(self.base):
            name = info.path.rsplit("/", 1)[-1]
            if name.startswith("version="):
                manifest = self.manifest(name.split("=", 1)[1])
                if manifest is not None:
                    out.append(manifest)
        return sorted(out, key=lambda m: m["version"])

    def _table(self, version: str, name: str) -> pa.Table:
        return pq.read_table(f"{self.folder(version)}/{name}.parquet", filesystem=self.storage.fs)

    def payload(self, version: str) -> VersionPayload:
        """What publishing a registered version loads into the vector database."""
        manifest = self.manifest(version)
        if manifest is None:
            raise VersionNotFound(
                f"version {version} is not in the registry ({self.storage.url(self.folder(version))})"
            )
        users, items, features = (
            self._table(version, n) for n in ("user_vectors", "item_vectors", "user_features")
        )
        return VersionPayload(
            version=version,
            customer_numbers=users.column("customerNumber").to_numpy().astype(np.int64),
            user_vectors=_vectors_of(users),
            product_codes=tuple(items.column("productCode").to_pylist()),
            item_vectors=_vectors_of(items),
            feature_names=tuple(features.column("feature").to_pylist()),
            feature_vectors=_vectors_of(features),
            encoder_spec=manifest["encoder"],
            training_build=manifest["training_build"],
            metrics={
                "gate": manifest.get("gate"),
                "evaluation": manifest.get("evaluation", {}).get("summary"),
            },
        )

    # ------------------------------------------------------------------ housekeeping
    def prune(self, retention: timedelta, keep: set[str], now: datetime | None = None) -> list[str]:
        """Delete versions created before the retention window, except those in ``keep``."""
        cutoff = (now or datetime.now(UTC)) - retention
        pruned = []
        for manifest in self.versions():
            created = datetime.fromisoformat(manifest["created_at"])
            if manifest["version"] in keep or created >= cutoff:
                continue
            folder = self.folder(manifest["version"])
            self.storage.delete(f"{folder}/{MANIFEST}")  # first: the version stops existing at once
            for info in self.storage.list(folder, recursive=True):
                self.storage.delete(info.path)
            if self.storage.is_local:
                import shutil

                shutil.rmtree(folder, ignore_errors=True)
            pruned.append(manifest["version"])
        return pruned
