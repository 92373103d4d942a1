"""Export each build of the training table to the lake, for the data scientist and the retraining DAG.

Layout: ``ml/ratings_ml_training/build_id=<UTC timestamp>/part-00000.parquet`` then
``_manifest.json`` (written last, atomically), and ``ml/ratings_ml_training/_latest.json``
pointing at the newest build. Column names are the fixed interface (DESIGN.md).
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from retail_platform.lake.storage import LakeStorage
from retail_platform.settings import Settings

TRAINING_COLUMNS = [
    "customerNumber",
    "city",
    "state",
    "postalCode",
    "country",
    "creditLimit",
    "productCode",
    "productLine",
    "productScale",
    "quantityInStock",
    "buyPrice",
    "MSRP",
    "productRating",
]
TRAINING_RELATION = "ml.ratings_ml_training"


class ExportError(RuntimeError):
    pass


def read_training_table(settings: Settings) -> pa.Table:
    if settings.dbt_target != "local":
        raise ExportError(
            "exporting from Redshift runs UNLOAD (macro unload_training_table); this reader is DuckDB's"
        )
    from retail_platform.warehouse.snapshots import read_only

    with read_only(settings) as conn:  # the published build: every one of its tests passed
        table = conn.sql(f"select * from {TRAINING_RELATION}").to_arrow_table()
    missing = [c for c in TRAINING_COLUMNS if c not in table.column_names]
    if missing:
        raise ExportError(f"{TRAINING_RELATION} lacks the interface columns {', '.join(missing)}")
    return table.select(TRAINING_COLUMNS)


def export_training_table(settings: Settings | None = None, table: pa.Table | None = None) -> dict:
    settings = settings or Settings.from_env()
    storage = LakeStorage.from_uri(settings.lake_uri, s3_endpoint_url=settings.s3_endpoint_url)
    built_at = datetime.now(UTC)
    build_id = f"{built_at:%Y%m%dT%H%M%S%fZ}"
    base = storage.path("ml", "ratings_ml_training")
    build_dir = f"{base}/build_id={build_id}"
    if settings.dbt_target == "prod" and table is None:
        return _unload_from_redshift(settings, storage, base, build_dir, build_id, built_at)
    table = read_training_table(settings) if table is None else table
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    data = buffer.getvalue()
    storage.ensure_dir(build_dir)
    storage.write_bytes_atomic(f"{build_dir}/part-00000.parquet", data)
    manifest = {
        "dataset": "ratings_ml_training",
        "build_id": build_id,
        "built_at": built_at.isoformat(),
        "row_count": table.num_rows,
        "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "files": [
            {
                "path": "part-00000.parquet",
                "rows": table.num_rows,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ],
        "source": {"warehouse": settings.dbt_target, "relation": TRAINING_RELATION},
    }
    storage.write_json_atomic(f"{build_dir}/_manifest.json", manifest)
    storage.write_json_atomic(f"{base}/_latest.json", {"build_id": build_id, "path": storage.url(build_dir)})
    return {"build_id": build_id, "rows": table.num_rows, "path": storage.url(build_dir)}


def _unload_from_redshift(settings, storage, base, build_dir, build_id, built_at) -> dict:
    """Redshift writes the files (UNLOAD ... MANIFEST VERBOSE); this writes the platform's manifest last."""
    import json

    from retail_platform.warehouse.dbt_runner import run_dbt

    run_dbt(
        [
            "run-operation",
            "unload_training_table",
            "--args",
            json.dumps({"location": storage.url(build_dir)}),
        ],
        settings,
    )
    unload_manifest = storage.read_json(f"{build_dir}/part-manifest")
    if not unload_manifest:
        raise ExportError(f"UNLOAD wrote no manifest under {storage.url(build_dir)}")
    files = []
    for entry in unload_manifest["entries"]:
        name = entry["url"].rsplit("/", 1)[1]
        files.append(
            {"path": name, "rows": entry["meta"]["record_count"], "bytes": entry["meta"]["content_length"]}
        )
    rows = sum(f["rows"] for f in files)
    storage.write_json_atomic(
        f"{build_dir}/_manifest.json",
        {
            "dataset": "ratings_ml_training",
            "build_id": build_id,
            "built_at": built_at.isoformat(),
            "row_count": rows,
            "files": files,
            "source": {"warehouse": "prod", "relation": TRAINING_RELATION},
        },
    )
    storage.write_json_atomic(f"{base}/_latest.json", {"build_id": build_id, "path": storage.url(build_dir)})
    return {"build_id": build_id, "rows": rows, "path": storage.url(build_dir)}


def read_latest_export(settings: Settings | None = None) -> tuple[dict, pa.Table]:
    """The newest committed export (what the retraining DAG reads)."""
    settings = settings or Settings.from_env()
    storage = LakeStorage.from_uri(settings.lake_uri, s3_endpoint_url=settings.s3_endpoint_url)
    base = storage.path("ml", "ratings_ml_training")
    latest = storage.read_json(f"{base}/_latest.json")
    if latest is None:
        raise ExportError("no ratings_ml_training export in the lake yet")
    build_dir = f"{base}/build_id={latest['build_id']}"
    manifest = storage.read_json(f"{build_dir}/_manifest.json")
    parts = [pq.read_table(f"{build_dir}/{f['path']}", filesystem=storage.fs) for f in manifest["files"]]
    return manifest, pa.concat_tables(parts)
