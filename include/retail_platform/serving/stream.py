"""The Kinesis side of the stream path (boto3): locally moto's server, in production Kinesis Data
Streams. boto3 finds the endpoint itself: ``AWS_ENDPOINT_URL_KINESIS`` (what the sandbox hands on)
or AWS's own."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from retail_platform.errors import ConfigurationError

log = logging.getLogger(__name__)
PUT_BATCH = 500  # PutRecords' limit
PUT_ATTEMPTS = 5


class StreamNotFound(ConfigurationError):
    pass


class OutputNotDelivered(RuntimeError):
    """Records the output stream kept refusing (throttling, an outage): retried from the checkpoint."""


def kinesis_client():
    import boto3
    from botocore.config import Config

    # Short timeouts: a consumer waiting on a dead endpoint should notice quickly and retry.
    return boto3.client(
        "kinesis",
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}),
    )


def describe(client, stream: str, setting: str) -> dict:
    try:
        return client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    except client.exceptions.ResourceNotFoundException:
        raise StreamNotFound(f"Kinesis stream {stream!r} ({setting}) does not exist") from None


def shard_ids(client, stream: str) -> list[str]:
    shards, token = [], None
    while True:
        page = client.list_shards(NextToken=token) if token else client.list_shards(StreamName=stream)
        shards += [s["ShardId"] for s in page["Shards"]]
        token = page.get("NextToken")
        if not token:
            return shards


def put_all(client, stream: str, items: Sequence[tuple[str, bytes]]) -> None:
    """Put (partition key, data) records; records refused (throttling) are retried with backoff."""
    for start in range(0, len(items), PUT_BATCH):
        pending = list(items[start : start + PUT_BATCH])
        for attempt in range(PUT_ATTEMPTS):
            response = client.put_records(
                StreamName=stream, Records=[{"PartitionKey": key, "Data": data} for key, data in pending]
            )
            if not response.get("FailedRecordCount"):
                break
            pending = [
                item
                for item, result in zip(pending, response["Records"], strict=True)
                if "ErrorCode" in result
            ]
            time.sleep(0.05 * 2**attempt)
        else:
            raise OutputNotDelivered(f"{len(pending)} records not accepted by stream {stream!r}")


def put_failures(client, stream: str, items: Sequence[tuple[str, bytes]]) -> list[int]:
    """Put once; the indices of the records the stream refused (for Lambda's partial batch response)."""
    failed: list[int] = []
    for start in range(0, len(items), PUT_BATCH):
        chunk = items[start : start + PUT_BATCH]
        response = client.put_records(
            StreamName=stream, Records=[{"PartitionKey": k, "Data": d} for k, d in chunk]
        )
        failed += [start + i for i, result in enumerate(response["Records"]) if "ErrorCode" in result]
    return failed
