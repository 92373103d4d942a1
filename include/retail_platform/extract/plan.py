"""Plan one extraction run: per contract table, what to read and how, from one schema read.

A plan is a typed object (:class:`TablePlan`). It travels as JSON: through XCom to the mapped
extraction tasks (``to_dict``/``from_dict``) and as the Glue job's ``--plan`` argument
(``to_json``/``from_json``). A table whose contract cannot be honoured on the live replica gets an
``error`` naming the table and column; a paused table gets a ``skip_reason``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from retail_platform.contract.model import Contract, ExtractionMode
from retail_platform.contract.types import UnsupportedTypeError, parse_type
from retail_platform.lake.batches import batch_id_for
from retail_platform.source.introspect import LiveSchema, LiveTable


class PlannedColumn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: str  # as the replica declares it, e.g. decimal(10,2)
    nullable: bool
    charset: str | None = None


class TablePlan(BaseModel):
    """What one extraction task reads and how; the same object drives both engines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    database: str
    table: str
    batch_id: str
    interval_start: datetime
    interval_end: datetime
    declared_mode: ExtractionMode
    mode: ExtractionMode
    mode_reason: str | None = None
    cursor: str | None = None
    cursor_type: str | None = None
    lookback_minutes: int = 0
    lookback_keys: int = 0
    primary_key: list[str]
    columns: list[PlannedColumn] = Field(default_factory=list)
    new_columns: list[str] = Field(default_factory=list)
    missing_optional_columns: list[str] = Field(default_factory=list)
    missing_columns: list[str] = Field(default_factory=list)
    critical: bool = False
    skip_reason: str | None = None
    error: str | None = None
    planned_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("interval_start", "interval_end", "planned_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        """Instants in UTC (a naive value is taken as UTC): bounds and batch ids compare them."""
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, doc: dict | TablePlan) -> TablePlan:
        return doc if isinstance(doc, TablePlan) else cls.model_validate(doc)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> TablePlan:
        return cls.model_validate_json(text)

    @property
    def runnable(self) -> bool:
        return self.skip_reason is None and self.error is None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column_type(self, name: str) -> str:
        return next(c.type for c in self.columns if c.name == name)

    def arrow_schema(self):
        """The lake schema of the batch: declared types, then the two bookkeeping columns."""
        import pyarrow as pa

        fields = [pa.field(c.name, parse_type(c.type).arrow, nullable=c.nullable) for c in self.columns]
        fields += [
            pa.field("_extracted_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("_batch_id", pa.string(), nullable=False),
        ]
        return pa.schema(fields)


def _check_columns(spec, table: str, live_table: LiveTable) -> dict:
    """The live columns the lake takes, and what the contract expects that the replica lacks."""
    found = {"columns": [], "new_columns": [], "missing_optional_columns": [], "missing_columns": []}
    errors = []
    for column in spec.columns:
        if live_table.column(column.name) is None:
            if column.optional:
                found["missing_optional_columns"].append(column.name)
            elif column.name in spec.primary_key:
                errors.append(f"primary key column {table}.{column.name} is missing on the replica")
            else:
                # Whether that breaks anything downstream is the schema watch's call (it pauses the
                # table then); otherwise the lake goes on without it and staging reads NULLs.
                found["missing_columns"].append(column.name)
    for live_column in live_table.columns:
        try:
            parse_type(live_column.type)
        except UnsupportedTypeError as exc:
            errors.append(f"column {table}.{live_column.name} has an unsupported type: {exc}")
            continue
        found["columns"].append(
            PlannedColumn(
                name=live_column.name,
                type=live_column.type,
                nullable=live_column.nullable,
                charset=live_column.charset,
            )
        )
        if live_column.name not in spec.column_names:
            found["new_columns"].append(live_column.name)
    return found | {"errors": errors}


def _check_cursor(spec, table: str, live_table: LiveTable) -> dict:
    cursor = spec.extraction.cursor
    if cursor is None:
        return {"errors": []}
    live_cursor = live_table.column(cursor)
    if live_cursor is not None:
        return {"cursor_type": live_cursor.type, "errors": []}
    if spec.column(cursor).optional:
        # The unmodified classicmodels schema: no cursor, so a full snapshot every batch.
        return {
            "mode": ExtractionMode.FULL,
            "cursor": None,
            "mode_reason": f"cursor {cursor} absent on the replica: full snapshot",
            "errors": [],
        }
    return {"errors": [f"cursor column {table}.{cursor} is missing on the replica"]}


def plan_table(
    contract: Contract,
    table: str,
    live: LiveSchema,
    *,
    interval_start: datetime,
    interval_end: datetime,
    pause: dict | None = None,
) -> TablePlan:
    spec = contract.tables[table]
    base = dict(
        source=contract.source.name,
        database=live.database,
        table=table,
        batch_id=batch_id_for(interval_start, interval_end),
        interval_start=interval_start,
        interval_end=interval_end,
        declared_mode=spec.extraction.mode,
        mode=spec.extraction.mode,
        cursor=spec.extraction.cursor,
        lookback_minutes=spec.extraction.lookback_minutes,
        lookback_keys=spec.extraction.lookback_keys,
        primary_key=list(spec.primary_key),
        critical=spec.critical,
    )
    if pause is not None:
        return TablePlan(**base, skip_reason=f"paused since {pause.get('since')}: {pause.get('reason')}")
    live_table = live.tables.get(table)
    if live_table is None:
        return TablePlan(**base, error=f"table {table} is in the contract but missing on the replica")
    columns = _check_columns(spec, table, live_table)
    cursor = _check_cursor(spec, table, live_table)
    errors = columns.pop("errors") + cursor.pop("errors")
    return TablePlan(**(base | columns | cursor), error="; ".join(errors) if errors else None)


def plan_extraction(
    contract: Contract,
    live: LiveSchema,
    *,
    interval_start: datetime,
    interval_end: datetime,
    pauses: dict[str, dict] | None = None,
    tables: list[str] | None = None,
) -> list[TablePlan]:
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
