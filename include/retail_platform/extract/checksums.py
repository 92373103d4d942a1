"""Per-column checksums of Arrow data, as MySQL computes them: ``COUNT(col)`` and ``SUM(CRC32(col))``.

A value's CRC32 is taken over its text as MySQL prints it (DECIMAL with its scale and no exponent,
DATETIME with its fractional digits, text in the column's character set). The text is made with
pyarrow's vectorised casts, and the CRC32 of every value of a batch at once with numpy: the
values are visited byte position by byte position, longest first, so each step updates a
shrinking prefix of an array instead of calling zlib once per value. The few values the casts
cannot print as MySQL does (a DECIMAL that pyarrow writes with an exponent, latin1 text outside
ASCII, values over ``LONG_VALUE`` bytes) go through zlib one by one. Both paths agree bit for bit.

``BackgroundChecksums`` runs the accumulation in a thread beside the read (numpy and pyarrow
release the GIL), so reconciling a full snapshot costs little beyond reading it.
"""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from retail_platform.contract.types import parse_type
from retail_platform.extract.queries import charset_encoding

LONG_VALUE = 256  # bytes: longer values are hashed one by one (few, and would cost a step per byte)
# Not compared by checksum: their text forms differ between MySQL and Python.
UNCHECKED_BASES = ("float", "double", "real", "time")


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1).astype(np.uint32)
    return table


CRC_TABLE = _crc_table()


def crc32_sum(values: pa.Array) -> int:
    """The sum of zlib.crc32 over every value of a binary/string array without nulls."""
    n = len(values)
    if n == 0:
        return 0
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=n + 1, offset=values.offset * 4)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    total = 0
    long = lengths > LONG_VALUE
    if long.any():
        for i in np.flatnonzero(long):
            total += zlib.crc32(data[offsets[i] : offsets[i + 1]].tobytes())
        keep = ~long
        offsets, lengths = offsets[:-1][keep], lengths[keep]
    else:
        offsets = offsets[:-1]
    # Longest first; lengths are at most LONG_VALUE, so a 16-bit radix sort orders them.
    order = np.argsort((LONG_VALUE - lengths).astype(np.uint16), kind="stable")
    starts, lengths = offsets[order].astype(np.int64), lengths[order]
    crc = np.full(len(order), 0xFFFFFFFF, dtype=np.uint32)
    longest = int(lengths[0]) if len(lengths) else 0
    # active[i]: how many values are longer than i bytes (a prefix, as lengths are sorted descending)
    active = np.searchsorted(-lengths, -np.arange(longest), side="left")
    index = np.empty(len(order), dtype=np.int64)
    for i in range(longest):
        k = int(active[i])
        head = crc[:k]
        np.add(starts[:k], i, out=index[:k])
        crc[:k] = CRC_TABLE[(head ^ data[index[:k]]) & 0xFF] ^ (head >> 8)
    crc ^= np.uint32(0xFFFFFFFF)
    return total + int(crc.sum(dtype=np.uint64))


def _python_text(declared: str, charset: str | None) -> Callable[[object], bytes]:
    """One value's text as MySQL prints it (the reference the vectorised path must equal)."""
    parsed = parse_type(declared)
    if parsed.base in ("datetime", "timestamp"):
        fsp = parsed.args[0] if parsed.args else 0

        def text(v):
            if v.tzinfo is not None:
                v = v.replace(tzinfo=None) - v.utcoffset()
            out = v.strftime("%Y-%m-%d %H:%M:%S")
            return (out + f".{v.microsecond:06d}"[: fsp + 1] if fsp else out).encode()

        return text
    if parsed.base == "date":
        return lambda v: v.isoformat().encode()
    if pa.types.is_string(parsed.arrow):
        encoding = charset_encoding(charset)
        return lambda v: v.encode(encoding, errors="replace")
    if pa.types.is_binary(parsed.arrow):
        return lambda v: bytes(v)
    if pa.types.is_decimal(parsed.arrow):
        return lambda v: format(v, "f").encode()  # MySQL never uses exponents: 0.0000000001, not 1E-10
    return lambda v: str(v).encode()


class ColumnChecksum:
    """(non-null count, CRC32 sum) of one column, accumulated batch by batch."""

    def __init__(self, name: str, declared: str, charset: str | None):
        self.name, self.count, self.crc = name, 0, 0
        self._parsed = parse_type(declared)
        self._slow = _python_text(declared, charset)
        self._transcode = charset_encoding(charset) != "utf-8"  # Arrow holds text as UTF-8

    def update(self, column: pa.Array) -> None:
        values = column.drop_null() if column.null_count else column
        self.count += len(values)
        fast, slow = self._texts(values)
        self.crc += crc32_sum(fast) + sum(zlib.crc32(self._slow(v)) for v in slow.to_pylist())

    def _texts(self, values: pa.Array) -> tuple[pa.Array, pa.Array]:
        """The values whose text the casts make (as binary), and those to print one by one."""
        arrow, base = self._parsed.arrow, self._parsed.base
        none = values.slice(0, 0)
        if pa.types.is_binary(arrow):
            return values, none
        if pa.types.is_string(arrow):
            if not self._transcode:
                return values.cast(pa.binary()), none
            odd = pc.invert(pc.string_is_ascii(values))
            return values.filter(pc.invert(odd)).cast(pa.binary()), values.filter(odd)
        if base in ("datetime", "timestamp"):
            fsp = self._parsed.args[0] if self._parsed.args else 0
            text = pc.utf8_slice_codeunits(pc.cast(values, pa.string()), 0, 19 + (fsp + 1 if fsp else 0))
            return text.cast(pa.binary()), none
        text = pc.cast(values, pa.string())
        if pa.types.is_decimal(arrow):
            odd = pc.match_substring(text, "E")
            return text.filter(pc.invert(odd)).cast(pa.binary()), values.filter(odd)
        return text.cast(pa.binary()), none


class ArrowChecksums:
    """The checksums of every checked column of a plan, over the batches the extractor writes."""

    def __init__(self, columns):
        self.rows = 0
        self.columns = [
            ColumnChecksum(c.name, c.type, c.charset)
            for c in columns
            if parse_type(c.type).base not in UNCHECKED_BASES
        ]

    def update(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for column in self.columns:
            column.update(batch.column(column.name))

    def result(self) -> tuple[int, dict[str, tuple[int, int]]]:
        return self.rows, {c.name: (c.count, c.crc) for c in self.columns}


class BackgroundChecksums:
    """``ArrowChecksums`` in a thread of its own, fed through a short queue (bounded memory)."""

    def __init__(self, columns, depth: int = 4):
        self._sums = ArrowChecksums(columns)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="checksums", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._sums.update(batch)
                except BaseException as exc:  # reported by result(); keep draining the queue
                    self._error = exc

    def update(self, batch: pa.RecordBatch) -> None:
        self._queue.put(batch)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def result(self) -> tuple[int, dict[str, tuple[int, int]]]:
        self.close()
        if self._error is not None:
            raise self._error
        return self._sums.result()
