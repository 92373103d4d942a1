"""A batch's manifest, built the same way by both engines (local and Glue)."""

from __future__ import annotations

from datetime import UTC, datetime

from retail_platform.extract.bounds import Bounds
from retail_platform.extract.plan import TablePlan


def normalise_cursor_value(value):
    """DATETIME cursors hold UTC wall time: make them instants like TIMESTAMP ones."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def build_manifest(
    plan: TablePlan,
    *,
    bounds: Bounds,
    max_seen,
    rows: int,
    files: list[dict],
    reconciliation: dict,
    query: str,
    engine: str,
    attempt: str,
    extracted_at: datetime,
    timings: dict,
) -> dict:
    source_types = {c.name: c.type for c in plan.columns}
    return {
        "source": plan.source,
        "table": plan.table,
        "batch_id": plan.batch_id,
        "data_interval": {"start": plan.interval_start.isoformat(), "end": plan.interval_end.isoformat()},
        "mode": plan.mode.value,
        "declared_mode": plan.declared_mode.value,
        "mode_reason": plan.mode_reason,
        "cursor": {}
        if plan.cursor is None
        else {
            "column": plan.cursor,
            **bounds.encoded(),
            "max_seen": Bounds(normalise_cursor_value(max_seen)).encoded()["lower"],
        },
        "row_count": rows,
        "primary_key": plan.primary_key,
        "columns": [
            {
                "name": f.name,
                "arrow_type": str(f.type),
                "nullable": f.nullable,
                "source_type": source_types.get(f.name),
            }
            for f in plan.arrow_schema()
        ],
        "new_columns": plan.new_columns,
        "missing_optional_columns": plan.missing_optional_columns,
        "missing_columns": plan.missing_columns,
        "files": files,
        "reconciliation": reconciliation,
        "query": query,
        "engine": engine,
        "attempt": attempt,
        "extracted_at": extracted_at.isoformat(),
        "timings": timings,
    }
