"""Write a source contract from a live replica's information_schema.

What a schema cannot tell — owners, criticality, lookbacks — is kept from an existing
contract when there is one, so re-bootstrapping after an accepted change keeps the
humans' decisions. New tables get the source's default owners.
"""

from __future__ import annotations

from retail_platform.contract.model import (
    Column,
    Contract,
    Extraction,
    ExtractionMode,
    Owners,
    SourceInfo,
    Table,
)
from retail_platform.contract.types import UnsupportedTypeError, parse_type
from retail_platform.source.introspect import LiveSchema, LiveTable

CURSOR_CANDIDATES = ("updated_at", "updatedAt", "last_modified", "modified_at", "lastUpdated")


def _guess_extraction(table: LiveTable) -> Extraction:
    for name in CURSOR_CANDIDATES:
        column = table.column(name)
        if column is not None and parse_type(column.type).base in ("datetime", "timestamp"):
            return Extraction(mode=ExtractionMode.INCREMENTAL, cursor=name)
    return Extraction(mode=ExtractionMode.FULL)


def contract_table_from_live(table: LiveTable, previous: Table | None = None) -> Table:
    columns = []
    for live in table.columns:
        try:
            parse_type(live.type)
        except UnsupportedTypeError as exc:
            raise UnsupportedTypeError(f"table {table.name}, column {live.name}: {exc}") from None
        old = None
        if previous is not None and live.name in previous.column_names:
            old = previous.column(live.name)
        columns.append(
            Column(
                name=live.name,
                type=live.type,
                nullable=live.nullable,
                optional=old.optional if old else False,
                description=old.description if old else None,
            )
        )
    extraction = _guess_extraction(table)
    if previous is not None:
        # Keep the chosen mode while its cursor still exists.
        cursor = previous.extraction.cursor
        if cursor is None or table.column(cursor) is not None:
            extraction = previous.extraction
    return Table(
        description=previous.description if previous else None,
        primary_key=table.primary_key or [table.columns[0].name],
        extraction=extraction,
        critical=previous.critical if previous else False,
        owners=previous.owners if previous else None,
        columns=columns,
    )


def bootstrap_contract(
    live: LiveSchema,
    *,
    connection_id: str,
    previous: Contract | None = None,
    name: str | None = None,
    only_tables: list[str] | None = None,
) -> Contract:
    """A contract from the live schema: ``previous`` updated, or a new source named ``name`` (default
    the database's name) read through ``connection_id``."""
    tables = dict(previous.tables) if previous else {}
    for table_name, table in sorted(live.tables.items()):
        if only_tables is not None and table_name not in only_tables:
            continue
        tables[table_name] = contract_table_from_live(table, tables.get(table_name))
    if only_tables is None:
        tables = {t: spec for t, spec in tables.items() if t in live.tables}
    source = (
        previous.source
        if previous
        else SourceInfo(
            name=name or live.database,
            database=live.database,
            connection_id=connection_id,
            default_owners=Owners(team="unassigned"),
        )
    )
    return Contract(version=1, source=source, tables=tables)
