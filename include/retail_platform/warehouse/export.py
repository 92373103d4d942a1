"""Export each build of the training table to the lake, for the data scientist and the retraining DAG.

Layout: ``ml/ratings_ml_training/build_id=<UTC timestamp>/part-00000.parquet`` (the training table)
and, from the same published warehouse snapshot, its companions in subfolders
(``fct_customer_product_interactions/``: each customer x product interaction and when it happened,
for the recommender's time-based split; ``fct_popular_products_7d/``: the fallback list), then
``_manifest.json`` (written last, atomically; ``files`` lists the training table's parts,
``companions`` the others'), and ``ml/ratings_ml_training/_latest.json`` pointing at the newest
build. Column names of the training table are the fixed interface (DESIGN.md).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
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
# Exported beside the training table in every build: name (a subfolder of the build) -> relation.
INTERACTIONS = "fct_customer_product_interactions"
POPULAR = "fct_popular_products_7d"
CATALOGUE = "dim_products"  # every product (ordered or not): the serving side needs a vector for each
COMPANIONS = {
    INTERACTIONS: "ml.fct_customer_product_interactions",
    POPULAR: "analytics.fct_popular_products_7d",
    CATALOGUE: "analytics.dim_products",
}


class ExportError(RuntimeError):
    pass


@dataclass(frozen=True)
class ExportBuild:
    """One committed export build: the training table and its companions (None in builds older
    than the companions)."""

    build_id: str
    manifest: dict
    training: pa.Table
    companions: dict[str, pa.Table] = field(default_factory=dict)
    path: str = ""

    @property
    def interactions(self) -> pa.Table | None:
        return self.companions.get(INTERACTIONS)

    @property
    def popular(self) -> pa.Table | None:
        return self.companions.get(POPULAR)

    @property
    def catalogue(self) -> pa.Table | None:
        return self.companions.get(CATALOGUE)


def _check_local(settings: Settings) -> None:
    if settings.dbt_target != "local":
        raise ExportError(
            "exporting from Redshift runs UNLOAD (macro unload_training_table); this reader is DuckDB's"
        )


def _interface_columns(table: pa.Table) -> pa.Table:
    missing = [c for c in TRAINING_COLUMNS if c not in table.column_names]
    if missing:
        raise ExportError(f"{TRAINING_RELATION} lacks the interface columns {', '.join(missing)}")
    return table.select(TRAINING_COLUMNS)


def read_training_table(settings: Settings) -> pa.Table:
    _check_local(settings)
    from retail_platform.warehouse.snapshots import read_only

    with read_only(settings) as conn:  # the published build: every one of its tests passed
        table = conn.sql(f"select * from {TRAINING_RELATION}").to_arrow_table()
    return _interface_columns(table)


def read_export_tables(settings: Settings) -> tuple[pa.Table, dict[str, pa.Table]]:
    """The training table and its companions, from one published snapshot (one consistent build)."""
    _check_local(settings)
    from retail_platform.warehouse.snapshots import read_only

    with read_only(settings) as conn:
        training = conn.sql(f"select * from {TRAINING_RELATION}").to_arrow_table()
        companions = {
            name: conn.sql(f"select * from {relation}").to_arrow_table()
            for name, relation in COMPANIONS.items()
        }
    return _interface_columns(training), companions


def _write_part(storage: LakeStorage, build_dir: str, path: str, table: pa.Table) -> dict:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    data = buffer.getvalue()
    if "/" in path:
        storage.ensure_dir(f"{build_dir}/{path.rsplit('/', 1)[0]}")
    storage.write_bytes_atomic(f"{build_dir}/{path}", data)
    return {
        "path": path,
        "rows": table.num_rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _columns(table: pa.Table) -> list[dict]:
    return [{"name": f.name, "type": str(f.type)} for f in table.schema]


def export_training_table(
    settings: Settings | None = None,
    table: pa.Table | None = None,
    companions: dict[str, pa.Table] | None = None,
) -> dict:
    """Write one export build; ``table``/``companions`` given: those (tests, backfills), else the
    published warehouse's."""
    settings = settings or Settings.from_env()
    storage = LakeStorage.from_uri(settings.lake_uri, s3_endpoint_url=settings.s3_endpoint_url)
    built_at = datetime.now(UTC)
    build_id = f"{built_at:%Y%m%dT%H%M%S%fZ}"
    base = storage.path("ml", "ratings_ml_training")
    build_dir = f"{base}/build_id={build_id}"
    if settings.dbt_target == "prod" and table is None:
        return _unload_from_redshift(settings, storage, base, build_dir, build_id, built_at)
    if table is None:
        table, companions = read_export_tables(settings)
    else:
        companions = {} if companions is None else companions
    storage.ensure_dir(build_dir)
    manifest = {
        "dataset": "ratings_ml_training",
        "build_id": build_id,
        "built_at": built_at.isoformat(),
        "row_count": table.num_rows,
        "columns": _columns(table),
        "files": [_write_part(storage, build_dir, "part-00000.parquet", table)],
        "source": {"warehouse": settings.dbt_target, "relation": TRAINING_RELATION},
        "companions": {
            name: {
                "relation": COMPANIONS.get(name, name),
                "row_count": companion.num_rows,
                "columns": _columns(companion),
                "files": [_write_part(storage, build_dir, f"{name}/part-00000.parquet", companion)],
            }
            for name, companion in companions.items()
        },
    }
    storage.write_json_atomic(f"{build_dir}/_manifest.json", manifest)
    storage.write_json_atomic(f"{base}/_latest.json", {"build_id": build_id, "path": storage.url(build_dir)})
    return {"build_id": build_id, "rows": table.num_rows, "path": storage.url(build_dir)}


def _unload_from_redshift(settings, storage, base, build_dir, build_id, built_at) -> dict:
    """Redshift writes the files (UNLOAD ... MANIFEST VERBOSE); this writes the platform's manifest last."""
    import json

    from retail_platform.warehouse.dbt_runner import run_dbt

    for macro in ("unload_training_table", "unload_ml_companions"):
        run_dbt(
            ["run-operation", macro, "--args", json.dumps({"location": storage.url(build_dir)})], settings
        )
    files = _unloaded_files(storage, build_dir, "")
    companions = {}
    for name, relation in COMPANIONS.items():
        parts = _unloaded_files(storage, build_dir, f"{name}/")
        companions[name] = {"relation": relation, "row_count": sum(f["rows"] for f in parts), "files": parts}
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
            "companions": companions,
        },
    )
    storage.write_json_atomic(f"{base}/_latest.json", {"build_id": build_id, "path": storage.url(build_dir)})
    return {"build_id": build_id, "rows": rows, "path": storage.url(build_dir)}


def _unloaded_files(storage: LakeStorage, build_dir: str, prefix: str) -> list[dict]:
    """The files one UNLOAD listed in its verbose manifest (``<prefix>part-manifest``)."""
    unload_manifest = storage.read_json(f"{build_dir}/{prefix}part-manifest")
    if not unload_manifest:
        raise ExportError(f"UNLOAD wrote no manifest under {storage.url(build_dir)}/{prefix}")
    return [
        {
            "path": prefix + entry["url"].rsplit("/", 1)[1],
            "rows": entry["meta"]["record_count"],
            "bytes": entry["meta"]["content_length"],
        }
        for entry in unload_manifest["entries"]
    ]


def read_latest_export(settings: Settings | None = None) -> tuple[dict, pa.Table]:
    """The newest committed export (what the retraining DAG reads)."""
    build = read_export(settings)
    return build.manifest, build.training


def read_export(settings: Settings | None = None, build_id: str | None = None) -> ExportBuild:
    """A committed export build (the newest when ``build_id`` is None), with its companions."""
    settings = settings or Settings.from_env()
    storage = LakeStorage.from_uri(settings.lake_uri, s3_endpoint_url=settings.s3_endpoint_url)
    base = storage.path("ml", "ratings_ml_training")
    if build_id is None:
        latest = storage.read_json(f"{base}/_latest.json")
        if latest is None:
            raise ExportError("no ratings_ml_training export in the lake yet")
        build_id = latest["build_id"]
    build_dir = f"{base}/build_id={build_id}"
    manifest = storage.read_json(f"{build_dir}/_manifest.json")
    if manifest is None:
        raise ExportError(f"training export build {build_id} is not committed (no manifest in {build_dir})")

    def read(files: list[dict]) -> pa.Table:
        return pa.concat_tables(
            [pq.read_table(f"{build_dir}/{f['path']}", filesystem=storage.fs) for f in files]
        )

    companions = {name: read(doc["files"]) for name, doc in (manifest.get("companions") or {}).items()}
    return ExportBuild(build_id, manifest, read(manifest["files"]), companions, storage.url(build_dir))
