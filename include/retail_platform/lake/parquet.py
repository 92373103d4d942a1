"""Writing a batch's Parquet files: numbered parts of bounded size, hashed while they are written.

Each file's sha256 (recorded in the manifest) is computed from the bytes on their way to the
file, not by reading the file back afterwards. With ``background=True`` the encoding and
compression run in a writer thread (pyarrow releases the GIL there), overlapped with the read
that produces the batches; a short queue keeps memory bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from retail_platform.lake.batches import WrittenFile

PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1}
FILE_ROWS = 4_000_000  # rows per Parquet file before the next part starts


class _HashingSink:
    """A file-like sink that hashes and counts the bytes it passes on."""

    def __init__(self, out):
        self._out, self._hash, self.size, self.closed = out, hashlib.sha256(), 0, False

    def write(self, data) -> int:
        view = memoryview(data)
        self._hash.update(view)  # releases the GIL for large buffers
        self._out.write(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        if not self.closed:
            self._out.close()
            self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class BatchFileWriter:
    """Record batches into ``path_for(0)``, ``path_for(1)``, ... of ``file_rows`` rows at most."""

    def __init__(self, fs, schema: pa.Schema, path_for: Callable[[int], str], file_rows: int = FILE_ROWS):
        self.fs, self.schema, self.path_for, self.file_rows = fs, schema, path_for, file_rows
        self.files: list[WrittenFile] = []
        self._writer: pq.ParquetWriter | None = None
        self._sink: _HashingSink | None = None
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None:
            self._open()
        self._writer.write_batch(batch)  # one Arrow batch, one row group: no re-buffering
        self._rows += batch.num_rows
        if self._rows >= self.file_rows:
            self._close_file()

    def close(self) -> list[WrittenFile]:
        if self._writer is None and not self.files:
            self._open()  # an empty batch still records its schema in one (empty) file
        if self._writer is not None:
            self._close_file()
        return self.files

    def abort(self) -> None:
        """Stop writing (the files stay unlisted: nothing reads them, the next commit removes them)."""
        writer, sink, self._writer, self._sink = self._writer, self._sink, None, None
        for closable in (writer, sink):
            if closable is not None:
                with contextlib.suppress(Exception):  # the original error matters, not the cleanup's
                    closable.close()

    def _open(self) -> None:
        path = self.path_for(len(self.files))
        self._sink = _HashingSink(self.fs.open_output_stream(path))
        self._writer = pq.ParquetWriter(pa.PythonFile(self._sink, mode="w"), self.schema, **PARQUET_OPTIONS)
        self._path, self._rows = path, 0

    def _close_file(self) -> None:
        self._writer.close()
        self._sink.close()
        self.files.append(WrittenFile(self._path, self._rows, self._sink.size, self._sink.hexdigest()))
        self._writer = self._sink = None


class BackgroundWriter:
    """A ``BatchFileWriter`` in a thread of its own, fed through a short queue."""

    def __init__(self, writer: BatchFileWriter, depth: int = 4):
        self._writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._writer.write(batch)
                except BaseException as exc:  # raised in the reading thread by write() or close()
                    self._error = exc

    def write(self, batch: pa.RecordBatch) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def close(self) -> list[WrittenFile]:
        self._stop()
        if self._error is not None:
            raise self._error
        return self._writer.close()

    def abort(self) -> None:
        self._stop()
        self._writer.abort()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
