"""The stream path against real servers: moto's server as Kinesis (the sandbox part, as ./platform
runs it), PostgreSQL + pgvector with a published version, the lake on disk (and on moto's S3 for the
Lambda). The consumer serves good events and dead-letters bad ones in the same batch; killed with
SIGKILL at random points it loses and duplicates no output; the Lambda handler reports partial
batch failures."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from serving_support import (
    MALFORMED,
    PRODUCTS,
    encode,
    event,
    expected_top,
    make_payload,
    publish,
    read_lake,
    read_stream,
)

from retail_platform.serving.records import FallbackReason, UserSource
from retail_platform.serving.settings import ServingSettings


@pytest.fixture(scope="module")
def kinesis(state_dir):
    from retail_platform.sandbox.kinesis import LocalKinesis

    part = LocalKinesis(state_dir / "kinesis", streams=(), shards=2).ensure_running()
    saved = {k: os.environ.get(k) for k in part.connection_env()}
    os.environ.update(part.connection_env())
    yield part
    part.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def model_v1(vector_db):
    from retail_platform.serving.holder import vectors_conninfo

    payload = make_payload(f"stream_{uuid.uuid4().hex[:8]}", seed=11)
    publish(vectors_conninfo(), payload)
    return payload


@pytest.fixture
def streams(kinesis, tmp_path):
    """Fresh streams and a fresh lake for one test; the settings that name them."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        "RETAIL_EVENTS_STREAM": f"events-{suffix}",
        "RETAIL_RECOMMENDATIONS_STREAM": f"recommendations-{suffix}",
        "RETAIL_LAKE_URI": str(tmp_path / "lake"),
        "RETAIL_SERVING_POPULAR_CACHE": str(tmp_path / "popular.json"),
        "RETAIL_LAKE_FLUSH_RECORDS": "4",
        "RETAIL_LAKE_FLUSH_S": "0.2",
        "RETAIL_CONSUMER_POLL_MS": "20",
        # These tests are about what is answered, not how fast: a busy machine must not turn them into
        # fallbacks (the budget has tests and a benchmark of its own).
        "RETAIL_SERVING_DEADLINE_MS": "5000",
    }
    kinesis.ensure_streams((env["RETAIL_EVENTS_STREAM"], env["RETAIL_RECOMMENDATIONS_STREAM"]))
    return env


def put(client, stream: str, payloads: list[bytes]) -> None:
    from retail_platform.serving.stream import put_all

    put_all(client, stream, [(uuid.uuid4().hex, p) for p in payloads])


@contextlib.contextmanager
def consumer_running(env: dict):
    """A consumer in a thread of the test, reading from the moment its shards are open (events put
    before it started would be past their budget on arrival, and answered by the fallback)."""
    from retail_platform.serving.consumer import StreamConsumer
    from retail_platform.serving.handler import build_handler
    from retail_platform.serving.lake_sink import RecommendationsLake

    settings = ServingSettings.from_env(os.environ | env)
    handler = build_handler(settings, watch=False)
    consumer = StreamConsumer(handler, settings, RecommendationsLake.from_settings(settings.platform))
    consumer.open_shards()
    stop, failed = threading.Event(), []
    thread = threading.Thread(target=collecting(consumer.run, failed), args=(stop,))
    thread.start()
    try:
        yield consumer
    finally:
        stop.set()
        thread.join()
        if failed:  # the cause of whatever the test saw (a timeout, missing outputs)
            raise AssertionError("the consumer thread failed") from failed[0]


def collecting(target, failed: list):
    """``target`` for a thread, keeping any exception it raises (not only AssertionError) in ``failed``."""

    def run(*args):
        try:
            target(*args)
        except BaseException as exc:
            failed.append(exc)

    return run


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_good_events_are_served_and_bad_ones_dead_lettered_in_the_same_batch(kinesis, model_v1, streams):
    client = kinesis.client()
    cart = PRODUCTS[2]
    good = [
        event(100, session_id="known", browse=[(cart, 1, True), (PRODUCTS[4], 2, False)]),
        event(987_654, session_id="new", country="France", credit_limit=0),
    ]
    bad = [raw for raw, _, _ in MALFORMED]
    payloads = [encode(good[0]), *bad[:5], encode(good[1]), *bad[5:]]
    with consumer_running(streams) as consumer:
        put(client, streams["RETAIL_EVENTS_STREAM"], payloads)
        wait_for(lambda: consumer.processed == len(payloads))

    outputs = {r["session_id"]: r for r in read_stream(client, streams["RETAIL_RECOMMENDATIONS_STREAM"])}
    assert set(outputs) == {"known", "new"}
    known, new = outputs["known"], outputs["new"]
    assert (known["fallback"], known["model_version"], known["user_source"]) == (
        False,
        model_v1.version,
        "published",
    )
    assert [i["id"] for i in known["recommended_items"]] == expected_top(model_v1, 100, cart=[cart])
    assert known["similar_items"]["product_code"] == cart
    assert (new["fallback"], new["user_source"]) == (False, UserSource.FEATURES)
    assert known["timings"]["total_ms"] < 1000

    lake = streams["RETAIL_LAKE_URI"]
    kept = read_lake(lake, "recommendations")
    assert sorted(r["session_id"] for r in kept) == ["known", "new"]
    letters = read_lake(lake, "recommendations_dead_letter")
    assert sorted((r["payload"], r["kind"]) for r in letters) == sorted(
        (raw, str(kind)) for raw, kind, _ in MALFORMED
    )
    assert all(r["reason"] for r in letters)


def _producer(client, stream: str, stop: threading.Event, sent: list[str], rate: float = 20.0) -> None:
    rng = random.Random(5)
    while not stop.is_set() and len(sent) < 2000:
        batch = []
        for _ in range(max(1, int(rate / 10))):
            session = f"k-{len(sent) + len(batch)}"
            if rng.random() < 0.1:
                batch.append(b'{"session_id": "' + session.encode() + b'", broken')
            else:
                batch.append(
                    encode(
                        event(
                            rng.choice([100, 103, 555_555]),
                            session_id=session,
                            browse=[(PRODUCTS[1], 1, True)],
                        )
                    )
                )
        put(client, stream, batch)
        sent += [json.loads(b)["session_id"] if not b.endswith(b"broken") else b.decode() for b in batch]
        stop.wait(0.1)


def committed(lake: str) -> tuple:
    """The shards' checkpoints (cheap to read: the test polls them)."""
    folder = Path(lake) / "_state" / "serving"
    return tuple(sorted((p.name, p.read_text()) for p in folder.rglob("*.json")))


def _consumer_process(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "retail_platform.cli", "consumer", *args],
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_a_consumer_killed_at_random_points_loses_and_duplicates_no_output(kinesis, model_v1, streams):
    client = kinesis.client()
    stop, sent, failed = threading.Event(), [], []
    producer = threading.Thread(
        target=collecting(_producer, failed), args=(client, streams["RETAIL_EVENTS_STREAM"], stop, sent)
    )
    producer.start()
    rng, progress, lake = random.Random(42), [], streams["RETAIL_LAKE_URI"]
    try:
        for _ in range(10):
            before = committed(lake)
            process = _consumer_process(streams)
            # Kill at a random point once it is consuming (its start-up takes seconds on a busy machine).
            wait_for(lambda b=before: committed(lake) != b, timeout=60)
            time.sleep(rng.uniform(0.0, 1.0))
            process.send_signal(signal.SIGKILL)
            process.wait()
            progress.append(committed(lake))
    finally:
        stop.set()
        producer.join()
    assert failed == [], "the producer failed"
    final = _consumer_process(streams, "--until-idle", "2")
    assert final.wait(120) == 0

    outputs, letters = read_lake(lake, "recommendations"), read_lake(lake, "recommendations_dead_letter")
    event_ids = [r["event_id"] for r in outputs] + [r["event_id"] for r in letters]
    assert len(event_ids) == len(set(event_ids)) == len(sent)
    good = sorted(r["session_id"] for r in outputs)
    assert good == sorted(s for s in sent if not s.endswith("broken"))
    assert sorted(r["payload"].decode() for r in letters) == sorted(s for s in sent if s.endswith("broken"))


def _kinesis_event(client, stream: str) -> dict:
    """What a Kinesis event source mapping hands the function: one shard's records, base64-encoded."""
    from retail_platform.serving.stream import shard_ids

    arn = client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    records = []
    for shard in shard_ids(client, stream):
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )
        response = client.get_records(ShardIterator=iterator["ShardIterator"])
        for r in response["Records"]:
            records.append(
                {
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": r["PartitionKey"],
                        "sequenceNumber": r["SequenceNumber"],
                        "data": base64.b64encode(r["Data"]).decode(),
                        "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp(),
                    },
                    "eventSource": "aws:kinesis",
                    "eventID": f"{shard}:{r['SequenceNumber']}",
                    "eventName": "aws:kinesis:record",
                    "eventSourceARN": arn,
                    "awsRegion": "us-east-1",
                }
            )
        if records:
            return {"Records": records}
    raise AssertionError("no records on the stream")


def test_the_lambda_handler_answers_a_batch_and_reports_partial_failures(
    kinesis, model_v1, streams, monkeypatch
):
    import boto3  # the same moto server plays S3 for the lake

    from retail_platform.serving import lambda_handler

    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=kinesis.endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    for name, value in streams.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RETAIL_LAKE_URI", f"s3://{bucket}/lake")
    monkeypatch.setenv("RETAIL_S3_ENDPOINT_URL", kinesis.endpoint)
    monkeypatch.setattr(lambda_handler, "_RUNTIME", None)
    lambda_handler.runtime()  # a warm container: its cold start is not part of these events' budget

    client = kinesis.client()
    payloads = [encode(event(100 + 3 * i, session_id=f"l-{i}")) for i in range(6)] + [b"not json"]
    put(client, streams["RETAIL_EVENTS_STREAM"], payloads)
    batch = _kinesis_event(client, streams["RETAIL_EVENTS_STREAM"])

    assert lambda_handler.handler(batch) == {"batchItemFailures": []}
    outputs = read_stream(client, streams["RETAIL_RECOMMENDATIONS_STREAM"])
    served = [r for r in outputs if not r["fallback"]]
    assert len(served) == sum(
        1 for r in batch["Records"] if base64.b64decode(r["kinesis"]["data"]) != b"not json"
    )
    listed = boto3.client("s3", endpoint_url=kinesis.endpoint, region_name="us-east-1").list_objects_v2(
        Bucket=bucket
    )
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(k.startswith("lake/recommendations/stream=") and "/lambda-" in k for k in keys), keys

    # The recommendations stream is gone: every record fails, reported from the first one on.
    client.delete_stream(StreamName=streams["RETAIL_RECOMMENDATIONS_STREAM"])
    first = batch["Records"][0]["kinesis"]["sequenceNumber"]
    assert lambda_handler.handler(batch) == {"batchItemFailures": [{"itemIdentifier": first}]}
    monkeypatch.setattr(lambda_handler, "_RUNTIME", None)


def refuse_records(client, partition_keys: set[str]) -> None:
    """Kinesis's partial answer to PutRecords when a shard is over its limits: the refused records
    are not stored and carry an ErrorCode in the answer, the others are stored. moto never
    throttles, so the client's own event hooks hold those records back and report them refused."""

    def hold_back(params, context, **_):
        records = params["Records"]
        context["refused_at"] = [i for i, r in enumerate(records) if r["PartitionKey"] in partition_keys]
        params["Records"] = [r for r in records if r["PartitionKey"] not in partition_keys]

    def report(parsed, context, **_):
        for i in context["refused_at"]:
            parsed["Records"].insert(
                i,
                {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"},
            )
        parsed["FailedRecordCount"] = parsed.get("FailedRecordCount", 0) + len(context["refused_at"])

    client.meta.events.register("before-parameter-build.kinesis.PutRecords", hold_back, unique_id="hold")
    client.meta.events.register("after-call.kinesis.PutRecords", report, unique_id="refuse")


def stop_refusing(client) -> None:
    client.meta.events.unregister("before-parameter-build.kinesis.PutRecords", unique_id="hold")
    client.meta.events.unregister("after-call.kinesis.PutRecords", unique_id="refuse")


def test_the_lambda_handler_retried_from_the_first_refused_record_keeps_each_record_once(
    kinesis, model_v1, streams, monkeypatch, tmp_path
):
    """The recommendations stream refuses the batch from its k-th record on: the answer names that
    record, the lake holds exactly the records before it (a dead letter among them), and Lambda's
    retry from there completes the lake with no record twice."""
    from retail_platform.lake.storage import LakeStorage
    from retail_platform.serving import lambda_handler
    from retail_platform.serving.lake_sink import RecommendationsLake
    from retail_platform.serving.stream import put_all

    for name, value in streams.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(lambda_handler, "_RUNTIME", None)
    rt = lambda_handler.runtime()
    client = kinesis.client()
    payloads = [encode(event(100 + 3 * i, session_id=f"p-{i}")) for i in range(6)]
    payloads.insert(2, b"not json")
    put_all(client, streams["RETAIL_EVENTS_STREAM"], [("one-shard", p) for p in payloads])
    records = _kinesis_event(client, streams["RETAIL_EVENTS_STREAM"])["Records"]
    assert [base64.b64decode(r["kinesis"]["data"]) for r in records] == payloads
    sessions = [json.loads(p)["session_id"] if p != b"not json" else None for p in payloads]
    event_ids = [f"{streams['RETAIL_EVENTS_STREAM']}:{r['eventID']}" for r in records]

    def in_lake(root) -> list[str]:
        kept = read_lake(root, "recommendations") + read_lake(root, "recommendations_dead_letter")
        return sorted(r["event_id"] for r in kept)

    for k in (1, 3, 6):
        root = tmp_path / f"lake-{k}"
        rt.lake = RecommendationsLake(LakeStorage.from_uri(str(root)))
        refuse_records(rt.client, {s for s in sessions[k:] if s is not None})
        try:
            answer = lambda_handler.handler({"Records": records})
        finally:
            stop_refusing(rt.client)
        assert answer == {"batchItemFailures": [{"itemIdentifier": records[k]["kinesis"]["sequenceNumber"]}]}
        assert in_lake(root) == sorted(event_ids[:k]), f"k={k}: the lake holds the records before it"
        assert lambda_handler.handler({"Records": records[k:]}) == {"batchItemFailures": []}
        assert in_lake(root) == sorted(event_ids), f"k={k}: after the retry, every record once"
    monkeypatch.setattr(lambda_handler, "_RUNTIME", None)


def test_a_missing_stream_is_a_configuration_error_naming_it(kinesis, model_v1, streams):
    from retail_platform.errors import ConfigurationError

    with (
        pytest.raises(ConfigurationError, match="stream 'nope' \\(RETAIL_EVENTS_STREAM\\) does not exist"),
        consumer_running(streams | {"RETAIL_EVENTS_STREAM": "nope"}),
    ):
        pass


def test_the_fallback_reason_is_named_when_no_model_answers(kinesis, streams, tmp_path):
    """A store with nothing published: every event is answered, from the popular list's copy."""
    from serving_support import make_popular

    from retail_platform.serving.holder import save_popular

    save_popular(tmp_path / "popular.json", make_popular("disk"))
    env = streams | {"AIRFLOW_CONN_RETAIL_VECTORS": "postgresql://u:p@127.0.0.1:9/retail"}
    saved = os.environ.get("AIRFLOW_CONN_RETAIL_VECTORS")
    os.environ["AIRFLOW_CONN_RETAIL_VECTORS"] = env["AIRFLOW_CONN_RETAIL_VECTORS"]
    try:
        with consumer_running(env) as consumer:
            put(kinesis.client(), streams["RETAIL_EVENTS_STREAM"], [encode(event(100, session_id="cold"))])
            wait_for(lambda: consumer.processed == 1)
    finally:
        if saved is None:
            os.environ.pop("AIRFLOW_CONN_RETAIL_VECTORS", None)
        else:
            os.environ["AIRFLOW_CONN_RETAIL_VECTORS"] = saved
    (record,) = read_stream(kinesis.client(), streams["RETAIL_RECOMMENDATIONS_STREAM"])
    assert (record["fallback"], record["fallback_reason"], record["popular_build"]) == (
        True,
        FallbackReason.NO_MODEL,
        "disk",
    )
