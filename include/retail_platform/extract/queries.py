"""SQL the extractors send to the replica. Shared by the local engine and the Glue job.

Identifiers come from the contract or information_schema and are always quoted; bound
values are formatted from typed Python values (datetimes, ints), never from strings.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from retail_platform.contract.types import quote_identifier as q

# MySQL character sets and the Python codecs that encode text as the server stores it
# (MySQL's latin1 is Windows-1252).
CHARSET_ENCODINGS = {
    "latin1": "cp1252",
    "utf8": "utf-8",
    "utf8mb3": "utf-8",
    "utf8mb4": "utf-8",
    "ascii": "ascii",
}


def charset_encoding(charset: str | None) -> str:
    return CHARSET_ENCODINGS.get((charset or "utf8mb4").lower(), "utf-8")


def literal(value) -> str:
    if isinstance(value, bool) or value is None:
        raise TypeError(f"unsupported cursor bound {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:  # sessions run in UTC
            value = value.astimezone(UTC).replace(tzinfo=None)
        return f"'{value:%Y-%m-%d %H:%M:%S.%f}'"
    raise TypeError(f"unsupported cursor bound {value!r}")


def range_predicate(cursor: str | None, lower, upper) -> str:
    """Half-open [lower, upper) on the cursor; an absent bound is open."""
    if cursor is None:
        return ""
    parts = []
    if lower is not None:
        parts.append(f"{q(cursor)} >= {literal(lower)}")
    if upper is not None:
        parts.append(f"{q(cursor)} < {literal(upper)}")
    return " AND ".join(parts)


def select_sql(database: str, table: str, columns: list[str], cursor: str | None, lower, upper) -> str:
    sql = f"SELECT {', '.join(q(c) for c in columns)} FROM {q(database)}.{q(table)}"
    where = range_predicate(cursor, lower, upper)
    return f"{sql} WHERE {where}" if where else sql


def count_sql(database: str, table: str, cursor: str | None, lower, upper) -> str:
    sql = f"SELECT COUNT(*) AS row_count FROM {q(database)}.{q(table)}"
    where = range_predicate(cursor, lower, upper)
    return f"{sql} WHERE {where}" if where else sql


def max_key_sql(database: str, table: str, cursor: str) -> str:
    return f"SELECT MAX({q(cursor)}) AS max_key FROM {q(database)}.{q(table)}"


def checksum_sql(database: str, table: str, columns: list[str]) -> str:
    """Per column: non-null count and the sum of CRC32 of the value's text (order-independent)."""
    # Aliases: Spark's JDBC reader re-selects the result's columns by name.
    parts = ["COUNT(*) AS row_count"]
    for i, column in enumerate(columns):
        parts += [f"COUNT({q(column)}) AS n_{i}", f"COALESCE(SUM(CRC32({q(column)})), 0) AS crc_{i}"]
    return f"SELECT {', '.join(parts)} FROM {q(database)}.{q(table)}"


def session_variables(server_version: str, statement_timeout_s: int) -> dict[str, str]:
    """Per-session settings of an extraction: UTC for TIMESTAMP values, and a statement timeout
    (MariaDB: max_statement_time in seconds; MySQL: max_execution_time in milliseconds)."""
    variables = {"time_zone": "'+00:00'"}
    if statement_timeout_s > 0:
        if "mariadb" in server_version.lower():
            variables["max_statement_time"] = str(int(statement_timeout_s))
        else:
            variables["max_execution_time"] = str(int(statement_timeout_s) * 1000)
    return variables


def session_setup(server_version: str, statement_timeout_s: int) -> list[str]:
    """The session variables as SET statements (connectorx's pre-execution queries)."""
    return [
        f"SET time_zone = {value}" if name == "time_zone" else f"SET SESSION {name} = {value}"
        for name, value in session_variables(server_version, statement_timeout_s).items()
    ]


def source_now_sql() -> str:
    return "SELECT UTC_TIMESTAMP(6) AS now_utc"


def key_range_sql(query: str, key: str) -> str:
    return f"SELECT MIN({q(key)}) AS key_low, MAX({q(key)}) AS key_high FROM ({query}) AS keyed"


def key_literal(value, charset: str | None = None) -> str:
    """A key value as a SQL literal both engines can send (Spark's JDBC reader binds no parameters).

    Text is sent as the bytes the column stores, with the column's character set as introducer
    (``_latin1 X'...'``): no quoting or escaping to get wrong, and compared in the column's collation."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"unsupported key value {value!r}")
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, str):
        name = (charset or "utf8mb4").lower()
        return f"_{name} X'{value.encode(charset_encoding(name)).hex()}'"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"X'{bytes(value).hex()}'"
    if isinstance(value, datetime):
        return literal(value)
    if isinstance(value, date):
        return f"'{value.isoformat()}'"
    raise TypeError(f"unsupported key value {value!r}")


def keys_present_sql(database: str, table: str, key_columns: list[str], keys: list[str]) -> str:
    """Which of ``keys`` (each a tuple of literals, in key-column order) the table has now."""
    columns = ", ".join(q(c) for c in key_columns)
    return f"SELECT {columns} FROM {q(database)}.{q(table)} WHERE ({columns}) IN ({', '.join(keys)})"
