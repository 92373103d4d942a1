"""Every output record and dead letter, kept in the lake as Parquet batches (as Firehose would).

Layout, under the lake root::

    recommendations/stream=<stream>/shard=<shard>/<first sequence>.parquet     stream outputs
    recommendations/api/date=<YYYY-MM-DD>/<time>-<pid>-<n>.parquet              API outputs
    recommendations_dead_letter/<the same>                                      refused events, raw
    _state/serving/<stream>/<shard>.json                                        the shard's checkpoint

Each file is written whole and atomically (a local rename, or one S3 PUT): a reader sees a batch
whole or not at all. Read them all with DuckDB:
``select * from read_parquet('<lake>/recommendations/**/*.parquet', union_by_name = true)``.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

from retail_platform.lake.storage import LakeStorage
from retail_platform.serving.records import DEAD_LETTER_SCHEMA, OUTPUT_SCHEMA, DeadLetter

log = logging.getLogger(__name__)
OUTPUTS = "recommendations"
DEAD_LETTERS = "recommendations_dead_letter"


@dataclass(frozen=True)
class Checkpoint:
    """How far a shard's outputs are in the lake. ``pending``: a batch being written (first, last
    sequence); after a crash the consumer rewrites exactly that range, under the same name, first."""

    shard_id: str
    stream_created: str
    sequence: str | None = None
    pending_first: str | None = None
    pending_last: str | None = None


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def outputs_table(outputs: list[bytes]) -> pa.Table:
    """Output records, as the JSON they were sent as, parsed by Arrow (in C++, off the GIL: an API's
    event loop keeps answering while a batch is written)."""
    options = pj.ParseOptions(explicit_schema=OUTPUT_SCHEMA, unexpected_field_behavior="ignore")
    return pj.read_json(io.BytesIO(b"\n".join(outputs)), parse_options=options)


class RecommendationsLake:
    def __init__(self, storage: LakeStorage):
        self.storage = storage

    @classmethod
    def from_settings(cls, settings) -> RecommendationsLake:
        return cls(LakeStorage.from_uri(settings.lake_uri, s3_endpoint_url=settings.s3_endpoint_url))

    def output_path(self, name: str) -> str:
        return self.storage.path(OUTPUTS, f"{name}.parquet")

    def dead_letter_path(self, name: str) -> str:
        return self.storage.path(DEAD_LETTERS, f"{name}.parquet")

    def write_batch(self, name: str, outputs: list[bytes], dead: list[DeadLetter]) -> None:
        """Both files of one batch (``outputs``: the records' JSON); rewriting the same name replaces them."""
        if outputs:
            self.storage.write_bytes_atomic(self.output_path(name), _parquet(outputs_table(outputs)))
        if dead:
            table = pa.Table.from_pylist([d.to_row() for d in dead], schema=DEAD_LETTER_SCHEMA)
            self.storage.write_bytes_atomic(self.dead_letter_path(name), _parquet(table))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, stream: str, shard_id: str) -> str:
        return self.storage.path("_state", "serving", stream, f"{shard_id}.json")

    def read_checkpoint(self, stream: str, shard_id: str) -> Checkpoint | None:
        doc = self.storage.read_json(self.checkpoint_path(stream, shard_id))
        return Checkpoint(**doc) if doc else None

    def save_checkpoint(self, stream: str, checkpoint: Checkpoint) -> None:
        self.storage.write_json_atomic(self.checkpoint_path(stream, checkpoint.shard_id), asdict(checkpoint))


def stream_batch_name(stream: str, shard_id: str, first_sequence: str, prefix: str = "") -> str:
    return f"stream={stream}/shard={shard_id}/{prefix}{first_sequence}"


class BufferedLakeWriter:
    """For entry points without a replayable source (the API): outputs buffered in memory and written
    as a batch by size or time, and at shutdown. A crash loses at most one flush interval's batch."""

    def __init__(self, lake: RecommendationsLake, prefix: str, max_records: int, max_age_s: float):
        self.lake, self.prefix = lake, prefix
        self.max_records, self.max_age_s = max_records, max_age_s
        self._lock = threading.Lock()
        self._records: list[bytes] = []
        self._dead: list[DeadLetter] = []
        self._oldest: float | None = None
        self._counter = itertools.count()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._timer, name="lake-writer", daemon=True)

    def start(self) -> BufferedLakeWriter:
        self._thread.start()
        return self

    def add(self, output: bytes | None = None, dead: DeadLetter | None = None) -> None:
        """Keep one answer (its JSON) or dead letter; a full buffer is written by the writer's thread."""
        with self._lock:
            if output is not None:
                self._records.append(output)
            if dead is not None:
                self._dead.append(dead)
            self._oldest = self._oldest or time.monotonic()
            full = len(self._records) + len(self._dead) >= self.max_records
        if full:
            self._wake.set()

    def flush(self) -> None:
        with self._lock:
            records, dead, self._records, self._dead, self._oldest = self._records, self._dead, [], [], None
        if not records and not dead:
            return
        now = datetime.now(UTC)
        name = f"{self.prefix}/date={now:%Y-%m-%d}/{now:%H%M%S%f}-{os.getpid()}-{next(self._counter)}"
        try:
            self.lake.write_batch(name, records, dead)
        except Exception:  # the answers went out; only their copy is lost, and said so
            log.exception("could not keep %d output records in the lake (%s)", len(records) + len(dead), name)

    def _timer(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(min(self.max_age_s / 4, 1.0))
            self._wake.clear()
            with self._lock:
                size = len(self._records) + len(self._dead)
                due = self._oldest is not None and time.monotonic() - self._oldest >= self.max_age_s
            if size >= self.max_records or due:
                self.flush()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()
