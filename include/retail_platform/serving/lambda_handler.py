"""The same handler as an AWS Lambda function behind a Kinesis event source mapping.

``retail_platform.serving.lambda_handler.handler``. A batch comes from one shard; each record is
answered, the outputs put on the recommendations stream and the batch's outputs and dead letters
written to the lake as one batch. With ``FunctionResponseTypes: ReportBatchItemFailures`` the
answer names the first record that could not be delivered: Lambda retries from there, and the lake
batch holds only the records before it. A malformed event is a dead letter, never a failure, so
it cannot block its shard. The vector store is re-read at most every ``RETAIL_SERVING_POLL_S``
between invocations (a frozen container runs no watcher thread).
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass

from retail_platform.serving.handler import Handler, Outcome, build_handler
from retail_platform.serving.lake_sink import RecommendationsLake, stream_batch_name
from retail_platform.serving.records import Origin
from retail_platform.serving.settings import ServingSettings
from retail_platform.serving.stream import kinesis_client, put_failures

log = logging.getLogger(__name__)


@dataclass
class LambdaRuntime:
    settings: ServingSettings
    handler: Handler
    lake: RecommendationsLake
    client: object
    checked_at: float

    def refresh_if_due(self) -> None:
        if time.monotonic() - self.checked_at < self.settings.poll_s:
            return
        self.checked_at = time.monotonic()
        try:
            self.handler.holder.refresh()
        except Exception as exc:  # keep answering from what is held
            log.warning("vector store: %s: %s", type(exc).__name__, exc)


_RUNTIME: LambdaRuntime | None = None


def runtime() -> LambdaRuntime:
    """Built once per container (a cold start), reused by every invocation after it."""
    global _RUNTIME
    if _RUNTIME is None:
        settings = ServingSettings.from_env()
        _RUNTIME = LambdaRuntime(
            settings,
            build_handler(settings, watch=False),
            RecommendationsLake.from_settings(settings.platform),
            kinesis_client(),
            time.monotonic(),
        )
        _RUNTIME.handler.warm_up()
    else:
        _RUNTIME.refresh_if_due()
    return _RUNTIME


def _answer(rt: LambdaRuntime, record: dict) -> tuple[str, Outcome]:
    kinesis = record["kinesis"]
    shard = record["eventID"].split(":", 1)[0]
    stream = record["eventSourceARN"].rsplit("/", 1)[-1]
    outcome = rt.handler.handle(
        base64.b64decode(kinesis["data"]),
        event_id=f"{stream}:{shard}:{kinesis['sequenceNumber']}",
        arrival=float(kinesis["approximateArrivalTimestamp"]),
        origin=Origin.LAMBDA,
    )
    return kinesis["sequenceNumber"], outcome


def handler(event: dict, context=None) -> dict:
    rt = runtime()
    records = event.get("Records") or []
    if not records:
        return {"batchItemFailures": []}
    answered = [_answer(rt, r) for r in records]
    with_output = [i for i, (_, o) in enumerate(answered) if o.record is not None]
    payload = [(answered[i][1].record.session_id, answered[i][1].json) for i in with_output]
    try:
        refused = put_failures(rt.client, rt.settings.recommendations_stream, payload)
    except Exception:
        log.exception("the recommendations stream refused the batch")
        refused = list(range(len(payload)))
    first_failed = with_output[min(refused)] if refused else len(answered)
    delivered = answered[:first_failed]
    if delivered:
        shard = records[0]["eventID"].split(":", 1)[0]
        stream = records[0]["eventSourceARN"].rsplit("/", 1)[-1]
        name = stream_batch_name(stream, shard, f"{delivered[0][0]}-{delivered[-1][0]}", prefix="lambda-")
        try:
            rt.lake.write_batch(
                name,
                [o.json for _, o in delivered if o.record is not None],
                [o.dead_letter for _, o in delivered if o.dead_letter is not None],
            )
        except Exception:
            log.exception("could not keep the batch in the lake; Lambda retries it")
            first_failed = 0
    if first_failed < len(answered):
        return {"batchItemFailures": [{"itemIdentifier": answered[first_failed][0]}]}
    return {"batchItemFailures": []}
