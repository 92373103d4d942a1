"""The stream consumer: reads every shard of the events stream, answers each event with the handler,
puts the output records on the recommendations stream for the sales platform, and keeps every output
and dead letter in the lake.

Exactly once in the lake, across crashes: a shard's checkpoint lives beside its batches and moves
only after the batch is durable. Before writing a batch the consumer records its range as pending;
after a crash it resumes after the last committed sequence and rewrites exactly the pending range,
under the same name, before anything else. A batch is therefore written whole or rewritten whole,
and no event's output is lost or kept twice. The output stream is at least once (a replay puts an
answer again): records carry ``event_id`` for the sales platform to drop repeats.

An outage of the stream — a refused connection, or a stream that is missing (moto restarted and has
not re-created it yet, a stream being re-created) — is waited out with backoff, never a reason to
exit; outputs already answered are written to the lake first. Batches carry the stream's creation
time in their names, so a re-created stream (whose sequence numbers start again) never overwrites
the batches of the one before.

``retail consumer [--until-idle S]``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from dataclasses import dataclass, field

from retail_platform.serving.handler import Handler, Outcome, build_handler
from retail_platform.serving.lake_sink import Checkpoint, RecommendationsLake, stream_batch_name
from retail_platform.serving.records import Origin
from retail_platform.serving.settings import ServingSettings
from retail_platform.serving.stream import describe, kinesis_client, put_all, shard_ids

log = logging.getLogger(__name__)
READ_LIMIT = 1000
RELIST_S = 60
MAX_PAUSE_S = 10
HEALTHY_RUN_S = 60


@dataclass
class ShardCursor:
    shard_id: str
    iterator: str | None
    committed: str | None  # last sequence whose output is in the lake
    replay_until: str | None = None  # a pending batch's last sequence: flush exactly there
    last_read: str | None = None
    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)
    oldest: float | None = None

    def add(self, sequence: str, outcome: Outcome) -> None:
        self.outcomes.append((sequence, outcome))
        self.oldest = self.oldest or time.monotonic()


class StreamConsumer:
    def __init__(self, handler: Handler, settings: ServingSettings, lake: RecommendationsLake, client=None):
        self.handler = handler
        self.settings = settings
        self.lake = lake
        self.client = client or kinesis_client()
        self.stream = settings.events_stream
        self.cursors: dict[str, ShardCursor] = {}
        self.stream_created = ""
        self.processed = 0

    # ------------------------------------------------------------------ shards
    def open_shards(self) -> None:
        summary = describe(self.client, self.stream, "RETAIL_EVENTS_STREAM")
        describe(self.client, self.settings.recommendations_stream, "RETAIL_RECOMMENDATIONS_STREAM")
        self.stream_created = summary["StreamCreationTimestamp"].isoformat()
        for shard_id in shard_ids(self.client, self.stream):
            if shard_id not in self.cursors:
                self.cursors[shard_id] = self._open(shard_id)

    def _open(self, shard_id: str) -> ShardCursor:
        checkpoint = self.lake.read_checkpoint(self.stream, shard_id)
        if checkpoint is not None and checkpoint.stream_created != self.stream_created:
            log.warning("shard %s: checkpoint of an earlier stream of that name ignored", shard_id)
            checkpoint = None
        committed = checkpoint.sequence if checkpoint else None
        cursor = ShardCursor(shard_id, self._iterator(shard_id, committed), committed)
        if checkpoint is not None and checkpoint.pending_last is not None:
            cursor.replay_until = checkpoint.pending_last
            log.info("shard %s: rewriting the interrupted batch up to %s", shard_id, checkpoint.pending_last)
        return cursor

    def _iterator(self, shard_id: str, after: str | None) -> str:
        position = (
            {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
            if after
            else {"ShardIteratorType": "TRIM_HORIZON"}
        )
        return self.client.get_shard_iterator(StreamName=self.stream, ShardId=shard_id, **position)[
            "ShardIterator"
        ]

    # ------------------------------------------------------------------ the loop
    def poll(self, cursor: ShardCursor) -> int:
        try:
            response = self.client.get_records(ShardIterator=cursor.iterator, Limit=READ_LIMIT)
        except self.client.exceptions.ExpiredIteratorException:
            cursor.iterator = self._iterator(cursor.shard_id, cursor.last_read or cursor.committed)
            return 0
        cursor.iterator = response.get("NextShardIterator")
        records = response["Records"]
        if not records:
            return 0
        answered = [(r["SequenceNumber"], self._handle(cursor.shard_id, r)) for r in records]
        put_all(
            self.client,
            self.settings.recommendations_stream,
            [(o.record.session_id, o.json) for _, o in answered if o.record is not None],
        )
        for sequence, outcome in answered:
            cursor.add(sequence, outcome)
            cursor.last_read = sequence
            if cursor.replay_until is not None and int(sequence) >= int(cursor.replay_until):
                self.flush(cursor)
        self.processed += len(records)
        return len(records)

    def _handle(self, shard_id: str, record: dict) -> Outcome:
        return self.handler.handle(
            record["Data"],
            event_id=f"{self.stream}:{shard_id}:{record['SequenceNumber']}",
            arrival=record["ApproximateArrivalTimestamp"].timestamp(),
            origin=Origin.STREAM,
        )

    def flush_due(self, force: bool = False) -> None:
        for cursor in self.cursors.values():
            if not cursor.outcomes or cursor.replay_until is not None:
                continue
            full = len(cursor.outcomes) >= self.settings.lake_flush_records
            old = time.monotonic() - cursor.oldest >= self.settings.lake_flush_s
            if force or full or old:
                self.flush(cursor)

    def flush(self, cursor: ShardCursor) -> None:
        """Pending range first, then the batch, then the committed checkpoint."""
        first, last = cursor.outcomes[0][0], cursor.outcomes[-1][0]
        base = Checkpoint(cursor.shard_id, self.stream_created, cursor.committed)
        self.lake.save_checkpoint(
            self.stream, Checkpoint(**{**base.__dict__, "pending_first": first, "pending_last": last})
        )
        self.lake.write_batch(
            stream_batch_name(self.stream, cursor.shard_id, first, prefix=self._generation()),
            [o.json for _, o in cursor.outcomes if o.record is not None],
            [o.dead_letter for _, o in cursor.outcomes if o.dead_letter is not None],
        )
        self.lake.save_checkpoint(self.stream, Checkpoint(cursor.shard_id, self.stream_created, last))
        cursor.committed, cursor.outcomes, cursor.oldest, cursor.replay_until = last, [], None, None

    def _generation(self) -> str:
        """The stream's creation time as a name prefix ('c20261206T213000-')."""
        digits = "".join(ch for ch in self.stream_created[:19] if ch.isdigit())
        return f"c{digits[:8]}T{digits[8:14]}-"

    def flush_answered(self) -> None:
        """After a failure: outputs already answered go to the lake, if the lake takes them (if not,
        the checkpoint still holds them for a replay)."""
        try:
            self.flush_due(force=True)
        except Exception as exc:
            log.warning(
                "consumer: answered outputs not written (%s); they are replayed from the checkpoint", exc
            )

    def run(self, stop: threading.Event, until_idle_s: float | None = None) -> int:
        """Consume until ``stop`` is set (or, with ``until_idle_s``, until every shard was empty that long)."""
        self.open_shards()
        listed, idle_since = time.monotonic(), time.monotonic()
        while not stop.is_set():
            got = sum(self.poll(c) for c in list(self.cursors.values()) if c.iterator is not None)
            self.flush_due()
            now = time.monotonic()
            if got:
                idle_since = now
            elif until_idle_s is not None and now - idle_since >= until_idle_s:
                break
            if now - listed >= RELIST_S:
                self.open_shards()
                listed = now
            if not got:
                stop.wait(self.settings.consumer_poll_ms / 1000)
        self.flush_due(force=True)
        return self.processed


def run_with_retries(consumer_factory, stop: threading.Event, until_idle_s: float | None) -> int:
    """An outage (the stream unreachable or missing, the lake) restarts the consumer from its
    checkpoints after a pause that grows to MAX_PAUSE_S; any other configuration problem stops it."""
    from retail_platform.errors import ConfigurationError
    from retail_platform.serving.stream import StreamNotFound

    processed, pause = 0, 0.5
    while not stop.is_set():
        consumer, started = consumer_factory(), time.monotonic()
        try:
            processed += consumer.run(stop, until_idle_s)
            return processed
        except StreamNotFound as missing:
            # Not a reason to exit: the stream may be coming back (a restarted Kinesis, a re-created
            # stream). Said loudly, with the setting that names it, in case it never does.
            log.error("consumer: %s; waiting for it (retry in %.1f s)", missing, pause)
        except ConfigurationError:
            raise
        except Exception as exc:
            log.warning(
                "consumer: %s: %s; resuming from the checkpoints in %.1f s", type(exc).__name__, exc, pause
            )
        processed += consumer.processed
        consumer.flush_answered()
        if time.monotonic() - started > HEALTHY_RUN_S:
            pause = 0.5  # it ran well for a while: this is a new outage, not the same one
        stop.wait(pause)
        pause = min(pause * 2, MAX_PAUSE_S)
    return processed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="retail consumer", description="the stream consumer")
    parser.add_argument(
        "--until-idle", type=float, default=None, help="stop once no event came for S seconds"
    )
    args = parser.parse_args(argv[1:])
    settings = ServingSettings.from_env()
    handler = build_handler(settings)
    handler.warm_up()
    lake = RecommendationsLake.from_settings(settings.platform)
    client = kinesis_client()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("consuming %s into %s and the lake", settings.events_stream, settings.recommendations_stream)
    processed = run_with_retries(
        lambda: StreamConsumer(handler, settings, lake, client), stop, args.until_idle
    )
    handler.holder.stop()
    log.info("consumer stopped after %d events", processed)
    return 0
