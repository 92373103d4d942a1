"""Column types: MySQL's declared type -> Arrow (the lake) -> warehouse (dbt sources, Spectrum).

The lake keeps the declared meaning: DECIMAL stays DECIMAL(p,s), DATETIME is a naive
timestamp, TIMESTAMP is an instant in UTC, text is UTF-8, BLOB is binary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

_TYPE = re.compile(r"^\s*(?P<base>[a-z]+)\s*(?:\((?P<args>[^)]*)\))?\s*(?P<flags>.*)$", re.IGNORECASE)

_INTS = {
    "tinyint": (pa.int8(), pa.uint8()),
    "smallint": (pa.int16(), pa.uint16()),
    "mediumint": (pa.int32(), pa.uint32()),
    "int": (pa.int32(), pa.uint32()),
    "integer": (pa.int32(), pa.uint32()),
    "bigint": (pa.int64(), pa.uint64()),
    "year": (pa.int16(), pa.int16()),
}
_TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set", "json"}
_BINARY = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "bit"}
_SPATIAL = {
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
}
# connectorx reads DECIMAL through a 128-bit decimal with 10 fractional digits and 18 integer digits;
# anything wider would be rounded or fail, so the contract refuses it up front.
MAX_DECIMAL_SCALE = 10
MAX_DECIMAL_INTEGER_DIGITS = 18


class UnsupportedTypeError(ValueError):
    pass


@dataclass(frozen=True)
class ColumnType:
    declared: str  # as information_schema.COLUMNS.COLUMN_TYPE spells it, e.g. "decimal(10,2)"
    base: str
    args: tuple[int, ...]
    unsigned: bool

    @property
    def arrow(self) -> pa.DataType:
        base = self.base
        if base in _INTS:
            signed, unsigned = _INTS[base]
            return unsigned if self.unsigned else signed
        if base in ("decimal", "numeric", "dec", "fixed"):
            precision, scale = (self.args + (10, 0))[:2] if self.args else (10, 0)
            return pa.decimal128(precision, scale)
        if base == "float":
            return pa.float32()
        if base in ("double", "real"):
            return pa.float64()
        if base == "date":
            return pa.date32()
        if base == "datetime":
            return pa.timestamp("us")
        if base == "timestamp":
            return pa.timestamp("us", tz="UTC")
        if base == "time":
            return pa.time64("us")
        if base in _TEXT:
            return pa.string()
        if base in _BINARY:
            return pa.binary()
        raise UnsupportedTypeError(self.declared)

    @property
    def is_integer(self) -> bool:
        return self.base in _INTS and self.base != "year"

    @property
    def warehouse(self) -> str:
        """A type both DuckDB and Redshift accept (dbt sources, Spectrum external tables)."""
        arrow = self.arrow
        if pa.types.is_int8(arrow) or pa.types.is_int16(arrow) or pa.types.is_uint8(arrow):
            return "smallint"
        if pa.types.is_int32(arrow) or pa.types.is_uint16(arrow):
            return "integer"
        if pa.types.is_integer(arrow):
            return "bigint"
        if pa.types.is_decimal(arrow):
            return f"decimal({arrow.precision},{arrow.scale})"
        if pa.types.is_float32(arrow):
            return "real"
        if pa.types.is_float64(arrow):
            return "double precision"
        if pa.types.is_date(arrow):
            return "date"
        if pa.types.is_timestamp(arrow):
            return "timestamp"
        if pa.types.is_time(arrow):
            return "varchar(16)"
        if pa.types.is_binary(arrow):
            return "varbyte"
        if self.base in ("char", "varchar") and self.args:
            # Redshift counts bytes, MySQL characters: UTF-8 needs up to 4 bytes a character.
            return f"varchar({min(self.args[0] * 4, 65535)})"
        return "varchar(65535)"


def parse_type(declared: str) -> ColumnType:
    """Parse a MySQL column type; raises UnsupportedTypeError for types the lake cannot keep exactly."""
    match = _TYPE.match(declared or "")
    if not match:
        raise UnsupportedTypeError(declared)
    base = match["base"].lower()
    raw_args = match["args"] or ""
    args: tuple[int, ...] = ()
    if base not in ("enum", "set") and raw_args:
        try:
            args = tuple(int(a) for a in raw_args.split(","))
        except ValueError:
            raise UnsupportedTypeError(declared) from None
    parsed = ColumnType(declared.strip(), base, args, "unsigned" in (match["flags"] or "").lower())
    if base in _SPATIAL:
        raise UnsupportedTypeError(f"{declared} (spatial types have no exact Parquet form)")
    if base in ("decimal", "numeric", "dec", "fixed"):
        precision, scale = (args + (10, 0))[:2] if args else (10, 0)
        if scale > MAX_DECIMAL_SCALE or precision - scale > MAX_DECIMAL_INTEGER_DIGITS:
            raise UnsupportedTypeError(
                f"{declared} (the extractor keeps decimals exactly up to {MAX_DECIMAL_INTEGER_DIGITS} integer "
                f"and {MAX_DECIMAL_SCALE} fractional digits)"
            )
    parsed.arrow  # noqa: B018 - raises UnsupportedTypeError for an unknown base type
    return parsed


def quote_identifier(name: str) -> str:
    """MySQL identifier quoting: names from the contract never reach SQL unquoted."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid identifier {name!r}")
    return "`" + name.replace("`", "``") + "`"
