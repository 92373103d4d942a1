"""Plan one extraction run: per contract table, what to read and how, from one schema read.

A plan is a plain dict (it travels through XCom to the mapped extraction tasks and to the
Glue job's arguments). A table whose contract cannot be honoured on the live replica gets
an ``error`` naming the table and column; a paused table gets a ``skip_reason``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from retail_platform.contract.model import Contract, ExtractionMode
from retail_platform.contract.types import UnsupportedTypeError, parse_type
from retail_platform.lake.batches import batch_id_for
from retail_platform.source.introspect import LiveSchema


def plan_table(
    contract: Contract,
    table: str,
    live: LiveSchema,
    *,
    interval_start: datetime,
    interval_end: datetime,
    pause: dict | None = None,
) -> dict:
    spec = contract.tables[table]
    plan = {
        "source": contract.source.name,
        "database": live.database,
        "table": table,
        "batch_id": batch_id_for(interval_start, interval_end),
        "interval_start": interval_start.isoformat(),
        "interval_end": interval_end.isoformat(),
        "declared_mode": spec.extraction.mode.value,
        "mode": spec.extraction.mode.value,
        "mode_reason": None,
        "cursor": spec.extraction.cursor,
        "cursor_type": None,
        "lookback_minutes": spec.extraction.lookback_minutes,
        "lookback_keys": spec.extraction.lookback_keys,
        "primary_key": list(spec.primary_key),
        "columns": [],
        "new_columns": [],
        "missing_optional_columns": [],
        "missing_columns": [],
        "critical": spec.critical,
        "skip_reason": None,
        "error": None,
        "planned_at": datetime.now(UTC).isoformat(),
    }
    if pause is not None:
        plan["skip_reason"] = f"paused since {pause.get('since')}: {pause.get('reason')}"
        return plan
    live_table = live.tables.get(table)
    if live_table is None:
        plan["error"] = f"table {table} is in the contract but missing on the replica"
        return plan
    errors = []
    for column in spec.columns:
        if live_table.column(column.name) is None:
            if column.optional:
                plan["missing_optional_columns"].append(column.name)
            elif column.name in spec.primary_key:
                errors.append(f"primary key column {table}.{column.name} is missing on the replica")
            else:
                # Whether that breaks anything downstream is the schema watch's call (it pauses the
                # table then); otherwise the lake goes on without it and staging reads NULLs.
                plan["missing_columns"].append(column.name)
    for live_column in live_table.columns:
        try:
            parse_type(live_column.type)
        except UnsupportedTypeError as exc:
            errors.append(f"column {table}.{live_column.name} has an unsupported type: {exc}")
            continue
        plan["columns"].append(
            {
                "name": live_column.name,
                "type": live_column.type,
                "nullable": live_column.nullable,
                "charset": live_column.charset,
            }
        )
        if live_column.name not in spec.column_names:
            plan["new_columns"].append(live_column.name)
    cursor = spec.extraction.cursor
    if cursor is not None:
        live_cursor = live_table.column(cursor)
        if live_cursor is None:
            if spec.column(cursor).optional:
                # The unmodified classicmodels schema: no cursor, so a full snapshot every batch.
                plan.update(
                    mode=ExtractionMode.FULL.value,
                    cursor=None,
                    mode_reason=f"cursor {cursor} absent on the replica: full snapshot",
                )
            else:
                errors.append(f"cursor column {table}.{cursor} is missing on the replica")
        else:
            plan["cursor_type"] = live_cursor.type
    if errors:
        plan["error"] = "; ".join(errors)
    return plan


def plan_extraction(
    contract: Contract,
    live: LiveSchema,
    *,
    interval_start: datetime,
    interval_end: datetime,
    pauses: dict[str, dict] | None = None,
    tables: list[str] | None = None,
) -> list[dict]:
    pauses = pauses or {}
    names = sorted(contract.tables) if tables is None else tables
    unknown = sorted(set(names) - set(contract.tables))
    if unknown:
        raise ValueError(f"tables not in the source contract: {', '.join(unknown)}")
    return [
        plan_table(
            contract,
            name,
            live,
            interval_start=interval_start,
            interval_end=interval_end,
            pause=pauses.get(name),
        )
        for name in names
    ]


def arrow_schema_for(plan: dict):
    """The lake schema of a planned batch: declared types, then the two bookkeeping columns."""
    import pyarrow as pa

    fields = [
        pa.field(c["name"], parse_type(c["type"]).arrow, nullable=c["nullable"]) for c in plan["columns"]
    ]
    fields += [
        pa.field("_extracted_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("_batch_id", pa.string(), nullable=False),
    ]
    return pa.schema(fields)
