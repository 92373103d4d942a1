"""The live schema of the source, read in one light query on information_schema."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from retail_platform.source.connection import MySQLConnectionInfo, connect

SCHEMA_QUERY = """
SELECT c.TABLE_NAME, c.COLUMN_NAME, c.ORDINAL_POSITION, c.COLUMN_TYPE, c.IS_NULLABLE, c.COLUMN_KEY,
       c.COLUMN_DEFAULT, c.EXTRA, c.CHARACTER_SET_NAME, k.ORDINAL_POSITION AS PK_POSITION
FROM information_schema.COLUMNS c
JOIN information_schema.TABLES t
  ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME AND t.TABLE_TYPE = 'BASE TABLE'
LEFT JOIN information_schema.KEY_COLUMN_USAGE k
  ON k.TABLE_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME AND k.COLUMN_NAME = c.COLUMN_NAME
 AND k.CONSTRAINT_NAME = 'PRIMARY'
WHERE c.TABLE_SCHEMA = %s
ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION
"""


@dataclass(frozen=True)
class LiveColumn:
    name: str
    position: int
    type: str
    nullable: bool
    key: str
    default: str | None
    extra: str
    charset: str | None


@dataclass
class LiveTable:
    name: str
    columns: list[LiveColumn] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)

    def column(self, name: str) -> LiveColumn | None:
        for column in self.columns:
            if column.name == name:
                return column
        return None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass
class LiveSchema:
    database: str
    read_at: str
    tables: dict[str, LiveTable]

    def to_dict(self) -> dict:
        return {
            "database": self.database,
            "read_at": self.read_at,
            "tables": {
                name: {"columns": [asdict(c) for c in t.columns], "primary_key": t.primary_key}
                for name, t in self.tables.items()
            },
        }

    @classmethod
    def from_dict(cls, doc: dict) -> LiveSchema:
        tables = {
            name: LiveTable(name, [LiveColumn(**c) for c in t["columns"]], list(t["primary_key"]))
            for name, t in doc["tables"].items()
        }
        return cls(doc["database"], doc["read_at"], tables)


def read_live_schema(info: MySQLConnectionInfo, conn=None) -> LiveSchema:
    own = conn is None
    conn = conn or connect(info)
    try:
        with conn.cursor() as cur:
            cur.execute(SCHEMA_QUERY, (info.database,))
            rows = cur.fetchall()
    finally:
        if own:
            conn.close()
    tables: dict[str, LiveTable] = {}
    pk_positions: dict[str, list[tuple[int, str]]] = {}
    for table, column, position, ctype, nullable, key, default, extra, charset, pk_position in rows:
        live = tables.setdefault(table, LiveTable(table))
        live.columns.append(
            LiveColumn(
                column, int(position), ctype, nullable == "YES", key or "", default, extra or "", charset
            )
        )
        if pk_position is not None:
            pk_positions.setdefault(table, []).append((int(pk_position), column))
    for table, keys in pk_positions.items():
        tables[table].primary_key = [name for _, name in sorted(keys)]
    return LiveSchema(info.database, datetime.now(UTC).isoformat(timespec="seconds"), tables)
