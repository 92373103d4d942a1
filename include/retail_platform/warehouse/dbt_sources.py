"""dbt sources written from the source contract (one contract, no hand-kept copy).

`retail contract dbt-sources` writes `dbt/models/staging/<source>/_<source>__sources.yml`;
`--check` (and a test) fail when the file and the contract disagree.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from retail_platform.contract.model import Contract
from retail_platform.sources import SourceNames

LAKE_SCHEMA = "lake_raw"
HEADER = (
    "# Generated from include/contracts/{source}.yml by `retail contract dbt-sources`: do not edit by hand.\n"
    "# Each table is a view (DuckDB) or Spectrum external table (Redshift) over the lake's committed\n"
    "# batches, created by `dbt run-operation register_lake_sources`.\n"
)


def sources_doc(contract: Contract) -> dict:
    src = contract.source
    names = SourceNames.of(contract)
    tables = []
    for name, table in sorted(contract.tables.items()):
        owners = contract.owners_of(name)
        columns = [
            {
                "name": column.name,
                "data_type": column.parsed_type.warehouse,
                "description": column.description or "",
                "config": {
                    "meta": {
                        "source_type": column.type,
                        "nullable": column.nullable,
                        "optional": column.optional,
                    }
                },
            }
            for column in table.columns
        ]
        for key in table.primary_key:
            # Not-null here; uniqueness holds only after staging keeps each key's latest version.
            next(c for c in columns if c["name"] == key)["data_tests"] = ["not_null"]
        tables.append(
            {
                "name": name,
                "identifier": names.lake_relation(name),
                "description": table.description or "",
                "config": {
                    "meta": {
                        "primary_key": table.primary_key,
                        "extraction_mode": table.extraction.mode.value,
                        "cursor": table.extraction.cursor,
                        "critical": table.critical,
                        "owners": owners.model_dump(mode="json", exclude_none=True),
                    }
                },
                "columns": columns,
            }
        )
    return {
        "version": 2,
        "sources": [
            {
                "name": src.name,
                "description": f"The {src.database} read replica, as committed batches in the Parquet lake.",
                "schema": LAKE_SCHEMA,
                "config": {
                    "meta": {
                        "owners": src.default_owners.model_dump(mode="json", exclude_none=True),
                        "downstream_channel": src.downstream_channel,
                        # register_lake_sources makes every source with a lake prefix a lake source.
                        "lake_prefix": names.lake_prefix,
                    },
                    "loaded_at_field": "_extracted_at",
                    "freshness": {
                        "warn_after": {"count": 30, "period": "minute"},
                        "error_after": {"count": 1, "period": "hour"},
                    },
                },
                "tables": tables,
            }
        ],
    }


def render_sources(contract: Contract) -> str:
    body = yaml.safe_dump(sources_doc(contract), sort_keys=False, allow_unicode=True, width=110)
    return HEADER.format(source=contract.source.name) + body


def sources_path(dbt_project_dir: Path, contract: Contract) -> Path:
    name = contract.source.name
    return dbt_project_dir / "models" / "staging" / name / f"_{name}__sources.yml"


def write_sources(contract: Contract, dbt_project_dir: Path) -> Path:
    path = sources_path(dbt_project_dir, contract)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_sources(contract), encoding="utf-8")
    return path


def sources_in_step(contract: Contract, dbt_project_dir: Path) -> bool:
    path = sources_path(dbt_project_dir, contract)
    return path.exists() and path.read_text(encoding="utf-8") == render_sources(contract)
