"""Compare two schemas of the source and classify every difference as additive or breaking.

Breaking (the pipeline pauses the table): a table in the contract dropped; its primary key
changed; its cursor lost; a column that anything downstream uses (models past staging,
exposures, tests) dropped, renamed, narrowed or changed to another type; a type the lake
cannot keep. Everything else is additive: it flows through and is reported.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

from retail_platform.contract.model import Contract, cursor_type_problem
from retail_platform.contract.types import UnsupportedTypeError, parse_type
from retail_platform.schema_watch.lineage import Impact, impact_of
from retail_platform.source.introspect import LiveSchema

ADDITIVE, BREAKING = "additive", "breaking"

_INT_RANK = {"tinyint": 1, "smallint": 2, "mediumint": 3, "int": 4, "integer": 4, "bigint": 5}
_TEXT_RANK = {"tinytext": 255, "text": 65_535, "mediumtext": 16_777_215, "longtext": 4_294_967_295}
_BLOB_RANK = {"tinyblob": 255, "blob": 65_535, "mediumblob": 16_777_215, "longblob": 4_294_967_295}


@dataclass(frozen=True)
class ColumnShape:
    name: str
    type: str
    nullable: bool
    position: int
    default: str | None = None
    optional: bool = False


@dataclass
class TableShape:
    name: str
    columns: list[ColumnShape]
    primary_key: list[str]

    def column(self, name: str) -> ColumnShape | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass
class Change:
    table: str
    kind: str
    column: str | None
    old: str | None
    new: str | None
    severity: str = ADDITIVE
    reason: str = ""
    impact: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Identifies the same change across runs (announced once)."""
        raw = f"{self.table}|{self.kind}|{self.column}|{self.old}|{self.new}"
        return hashlib.sha1(raw.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return asdict(self) | {"key": self.key}

    def describe(self) -> str:
        what = self.kind.replace("_", " ")
        subject = f"`{self.column}`" if self.column else f"`{self.table}`"
        return f"{what} {subject}: {self.old or '—'} → {self.new or '—'}"


def shapes_from_live(live: LiveSchema) -> dict[str, TableShape]:
    return {
        name: TableShape(
            name,
            [ColumnShape(c.name, c.type, c.nullable, c.position, c.default) for c in table.columns],
            list(table.primary_key),
        )
        for name, table in live.tables.items()
    }


def shapes_from_contract(contract: Contract, *, mark_optional: bool = True) -> dict[str, TableShape]:
    """The schema the contract accepts. Optional columns (absent on the unmodified classicmodels
    schema) are marked so their absence is no drift; a planned change to them still counts."""
    return {
        name: TableShape(
            name,
            [
                ColumnShape(c.name, c.type, c.nullable, i + 1, None, c.optional and mark_optional)
                for i, c in enumerate(table.columns)
            ],
            list(table.primary_key),
        )
        for name, table in contract.tables.items()
    }


def compare_types(old: str, new: str) -> str:
    """'same', 'widened', 'narrowed' or 'changed'."""
    if old.strip().lower() == new.strip().lower():
        return "same"
    try:
        a, b = parse_type(old), parse_type(new)
    except UnsupportedTypeError:
        return "changed"
    if a.base in _INT_RANK and b.base in _INT_RANK and a.unsigned == b.unsigned:
        ra, rb = _INT_RANK[a.base], _INT_RANK[b.base]
        return "same" if ra == rb else ("widened" if rb > ra else "narrowed")
    if a.base in ("decimal", "numeric") and b.base in ("decimal", "numeric"):
        (pa_, sa), (pb, sb) = (a.args + (10, 0))[:2], (b.args + (10, 0))[:2]
        if pb - sb >= pa_ - sa and sb >= sa:
            return "widened"
        if pb - sb <= pa_ - sa and sb <= sa:
            return "narrowed"
        return "changed"
    strings = ("char", "varchar")
    if a.base in strings + tuple(_TEXT_RANK) and b.base in strings + tuple(_TEXT_RANK):
        size_a = a.args[0] if a.base in strings else _TEXT_RANK[a.base]
        size_b = b.args[0] if b.base in strings else _TEXT_RANK[b.base]
        return "widened" if size_b > size_a else ("narrowed" if size_b < size_a else "same")
    if a.base in _BLOB_RANK and b.base in _BLOB_RANK:
        return "widened" if _BLOB_RANK[b.base] > _BLOB_RANK[a.base] else "narrowed"
    if {a.base, b.base} == {"float", "double"}:
        return "widened" if b.base == "double" else "narrowed"
    if a.base == b.base and a.base in ("datetime", "timestamp", "time"):
        fa, fb = (a.args or (0,))[0], (b.args or (0,))[0]
        return "widened" if fb > fa else "narrowed"
    return "changed"


def diff_schemas(
    old: dict[str, TableShape],
    new: dict[str, TableShape],
    *,
    contract: Contract,
    lineage: dict | None,
    compare_defaults: bool = False,
) -> list[Change]:
    """Every difference from ``old`` to ``new``, classified, with its downstream impact."""
    changes: list[Change] = []
    source = contract.source.name
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        in_contract = name in contract.tables
        if before is None:
            changes.append(
                Change(
                    name,
                    "table_added",
                    None,
                    None,
                    f"{len(after.columns)} columns",
                    ADDITIVE,
                    "a new table is not extracted until it is in the contract",
                )
            )
            continue
        if after is None:
            impact = impact_of(lineage, source, name, [c.name for c in before.columns])
            severity = BREAKING if in_contract else ADDITIVE
            changes.append(
                Change(
                    name,
                    "table_dropped",
                    None,
                    f"{len(before.columns)} columns",
                    None,
                    severity,
                    "the table is extracted and read downstream" if in_contract else "not in the contract",
                    impact.to_dict(),
                )
            )
            continue
        changes += _diff_table(before, after, contract, lineage, compare_defaults)
    return changes


def _diff_table(
    before: TableShape, after: TableShape, contract: Contract, lineage, compare_defaults
) -> list[Change]:
    table = before.name
    spec = contract.tables.get(table)
    cursor = spec.extraction.cursor if spec else None
    keys = set(before.primary_key)
    source = contract.source.name
    out: list[Change] = []
    dropped = [c for c in before.columns if after.column(c.name) is None and not c.optional]
    added = [c for c in after.columns if before.column(c.name) is None]
    renamed: list[tuple[ColumnShape, ColumnShape]] = []
    for old_col in list(dropped):
        twin = next(
            (
                c
                for c in added
                if c.position == old_col.position and compare_types(old_col.type, c.type) == "same"
            ),
            None,
        )
        if twin is not None:
            renamed.append((old_col, twin))
            dropped.remove(old_col)
            added.remove(twin)

    def lost(kind: str, column: ColumnShape, new_value: str | None) -> Change:
        impact = impact_of(lineage, source, table, [column.name])
        if column.name == cursor:
            optional_cursor = spec is not None and spec.column(cursor).optional
            if optional_cursor and kind == "column_dropped":
                severity, reason = ADDITIVE, "the cursor is optional: extraction falls back to full snapshots"
            else:
                kind, severity, reason = "cursor_lost", BREAKING, "the extraction cursor is lost"
        elif column.name in keys:
            severity, reason = BREAKING, "part of the primary key (staging keeps the latest version per key)"
        elif impact.used():
            severity, reason = BREAKING, _used_by(impact)
        else:
            severity, reason = ADDITIVE, "nothing downstream reads it (staging passes NULL through)"
        return Change(table, kind, column.name, column.type, new_value, severity, reason, impact.to_dict())

    for column in dropped:
        out.append(lost("column_dropped", column, None))
    for old_col, new_col in renamed:
        change = lost("column_renamed", old_col, new_col.name)
        change.old, change.new = old_col.name, new_col.name
        if change.severity == ADDITIVE:
            change.reason = "likely rename (same type, same position); nothing downstream reads the old name"
        else:
            change.reason = "likely rename (same type, same position); " + change.reason
        out.append(change)
    for column in added:
        try:
            parse_type(column.type)
            severity, reason = ADDITIVE, "flows into the lake; staging is unchanged"
        except UnsupportedTypeError as exc:
            severity, reason = BREAKING, f"the lake cannot keep it: {exc}"
        out.append(Change(table, "column_added", column.name, None, column.type, severity, reason))
    for old_col in before.columns:
        new_col = after.column(old_col.name)
        if new_col is None:
            continue
        verdict = compare_types(old_col.type, new_col.type)
        if verdict != "same":
            out.append(_type_change(table, old_col, new_col, verdict, spec, cursor, keys, lineage, source))
        if old_col.nullable != new_col.nullable:
            relaxed = new_col.nullable
            severity = BREAKING if relaxed and old_col.name in keys else ADDITIVE
            impact = impact_of(lineage, source, table, [old_col.name])
            if severity == BREAKING:
                reason = "a key column may now be null"
            elif relaxed and impact.tests:
                reason = f"nulls may now reach {len(impact.tests)} dbt tests of this column"
            else:
                reason = "values stay valid downstream"
            out.append(
                Change(
                    table,
                    "nullability_relaxed" if relaxed else "nullability_tightened",
                    old_col.name,
                    "NULL" if old_col.nullable else "NOT NULL",
                    "NULL" if new_col.nullable else "NOT NULL",
                    severity,
                    reason,
                    impact.to_dict(),
                )
            )
        if compare_defaults and old_col.default != new_col.default:
            out.append(
                Change(
                    table,
                    "default_changed",
                    old_col.name,
                    str(old_col.default),
                    str(new_col.default),
                    ADDITIVE,
                    "new rows get another default",
                    impact_of(lineage, source, table, [old_col.name]).to_dict(),
                )
            )
    if before.primary_key != after.primary_key:
        key_columns = sorted(set(before.primary_key) | set(after.primary_key))
        out.append(
            Change(
                table,
                "primary_key_changed",
                None,
                ", ".join(before.primary_key) or "none",
                ", ".join(after.primary_key) or "none",
                BREAKING,
                "staging deduplicates on the primary key",
                impact_of(lineage, source, table, key_columns).to_dict(),
            )
        )
    return out


def _type_change(table, old_col, new_col, verdict, spec, cursor, keys, lineage, source) -> Change:
    kind = {"widened": "type_widened", "narrowed": "type_narrowed", "changed": "type_changed"}[verdict]
    impact = impact_of(lineage, source, table, [old_col.name])
    try:
        new_type = parse_type(new_col.type)
    except UnsupportedTypeError as exc:
        severity, reason = BREAKING, f"the lake cannot keep it: {exc}"
    else:
        # The contract's own rule for cursor types (incremental: a time; append-only: an integer).
        problem = cursor_type_problem(spec.extraction.mode, new_type) if old_col.name == cursor else None
        if problem:
            kind, severity, reason = "cursor_lost", BREAKING, f"the extraction cursor: {problem}"
        elif verdict == "widened":
            severity, reason = ADDITIVE, "every old value still fits"
        elif old_col.name in keys:
            severity, reason = BREAKING, "part of the primary key"
        elif impact.used():
            severity, reason = BREAKING, _used_by(impact)
        else:
            severity, reason = ADDITIVE, "nothing downstream reads it"
    return Change(table, kind, old_col.name, old_col.type, new_col.type, severity, reason, impact.to_dict())


def _used_by(impact: Impact) -> str:
    if not impact.known:
        return "no lineage available: assumed read downstream"
    parts = []
    if impact.downstream_models:
        parts.append("read by " + ", ".join(impact.downstream_models))
    if impact.exposures:
        parts.append("shown in " + ", ".join(impact.exposures))
    if impact.tests:
        parts.append(f"tested by {len(impact.tests)} dbt tests")
    return "; ".join(parts)


def breaking_tables(changes: list[Change]) -> dict[str, list[Change]]:
    out: dict[str, list[Change]] = {}
    for change in changes:
        if change.severity == BREAKING:
            out.setdefault(change.table, []).append(change)
    return out
