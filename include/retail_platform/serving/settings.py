"""Settings of the serving side: the handler's budget, the stream, the lake batches and the API.

Its connection to the vector store, ``retail_vectors``, is documented with the recommender's settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from retail_platform.settings import Setting, Settings, read_settings

API_KEYS_CONN_ID = "retail_api_keys"

SETTINGS_DOC: list[Setting] = [
    Setting(
        "RETAIL_SERVING_DEADLINE_MS",
        300.0,
        "per-event budget from arrival; past it the popular list answers",
        float,
        "deadline_ms",
        positive=True,
    ),
    Setting(
        "RETAIL_SERVING_TOP_K",
        10,
        "recommended and similar items per answer",
        int,
        "top_k",
        positive=True,
    ),
    Setting(
        "RETAIL_SERVING_MAX_IN_FLIGHT",
        64,
        "requests handled at once by one process; beyond it requests are answered from the popular list",
        int,
        "max_in_flight",
        positive=True,
    ),
    Setting(
        "RETAIL_SERVING_BREAKER_FAILURES",
        3,
        "consecutive vector-store failures that open the circuit",
        int,
        "breaker_failures",
        positive=True,
    ),
    Setting(
        "RETAIL_SERVING_BREAKER_RESET_S",
        5.0,
        "seconds the circuit stays open before one probe",
        float,
        "breaker_reset_s",
    ),
    Setting(
        "RETAIL_SERVING_POLL_S",
        10.0,
        "how often the current version is polled (besides LISTEN/NOTIFY)",
        float,
        "poll_s",
    ),
    Setting(
        "RETAIL_SERVING_POPULAR_CACHE",
        None,
        "last-resort copy of the popular list, for a cold start without the vector store",
        Path,
        "popular_cache",
        shown="<state>/serving/popular_products.json",
    ),
    Setting(
        "RETAIL_SERVING_MAX_EVENT_BYTES",
        32768,
        "larger events are dead-lettered unread",
        int,
        "max_event_bytes",
    ),
    Setting(
        "RETAIL_SERVING_MAX_QUANTITY",
        1000,
        "a browse item's quantity above this is absurd (dead letter)",
        int,
        "max_quantity",
    ),
    Setting(
        "RETAIL_SERVING_MAX_BROWSE_ITEMS",
        200,
        "longest browse history an event may carry",
        int,
        "max_browse_items",
    ),
    Setting(
        "RETAIL_EVENTS_STREAM",
        "retail-shopper-events",
        "Kinesis stream the sales platform puts events on",
        attr="events_stream",
    ),
    Setting(
        "RETAIL_RECOMMENDATIONS_STREAM",
        "retail-recommendations",
        "Kinesis stream the output records go to, for the sales platform",
        attr="recommendations_stream",
    ),
    Setting(
        "RETAIL_KINESIS_SHARDS",
        2,
        "sandbox: shards of each stream it creates",
        int,
        "kinesis_shards",
        positive=True,
    ),
    Setting(
        "RETAIL_KINESIS_PORT",
        None,
        "sandbox: TCP port of moto's server (127.0.0.1 only)",
        int,
        "kinesis_port",
        shown="a free port",
    ),
    Setting(
        "RETAIL_CONSUMER_POLL_MS",
        50.0,
        "consumer: pause between reads of an idle shard",
        float,
        "consumer_poll_ms",
    ),
    Setting(
        "RETAIL_LAKE_FLUSH_RECORDS",
        500,
        "a shard's lake batch is written at this many records",
        int,
        "lake_flush_records",
        positive=True,
    ),
    Setting(
        "RETAIL_LAKE_FLUSH_S",
        5.0,
        "or when its oldest record has waited this long",
        float,
        "lake_flush_s",
    ),
    Setting(
        "RETAIL_API_KEYS",
        None,
        "API keys as name:key pairs, comma-separated; unset: the Airflow connection retail_api_keys "
        '(any backend; the password is one key, or extra {"keys": {name: key}})',
        shown="unset: connection retail_api_keys",
    ),
    Setting(
        "RETAIL_API_HOST",
        "127.0.0.1",
        "the API's address",
        attr="api_host",
    ),
    Setting(
        "RETAIL_API_PORT",
        8600,
        "the API's port",
        int,
        "api_port",
    ),
    Setting(
        "RETAIL_API_WORKERS",
        None,
        "API worker processes (each holds its own vectors)",
        int,
        "api_workers",
        minimum=0,
        shown="unset: one a core, at most 2",
    ),
    Setting(
        "RETAIL_API_LIMIT_CONCURRENCY",
        1024,
        "connections one API worker holds; past it a request gets 503 with Retry-After before the app "
        "runs (keep it above the callers' connection pools: each refusal closes its connection)",
        int,
        "api_limit_concurrency",
        positive=True,
    ),
    Setting(
        "RETAIL_API_BACKLOG",
        512,
        "the API's accept queue (new connections waiting for a worker)",
        int,
        "api_backlog",
        positive=True,
    ),
]


@dataclass(frozen=True)
class ServingSettings:
    platform: Settings
    deadline_ms: float
    top_k: int
    max_in_flight: int
    breaker_failures: int
    breaker_reset_s: float
    poll_s: float
    popular_cache: Path
    max_event_bytes: int
    max_quantity: int
    max_browse_items: int
    events_stream: str
    recommendations_stream: str
    kinesis_shards: int
    kinesis_port: int | None
    consumer_poll_ms: float
    lake_flush_records: int
    lake_flush_s: float
    api_host: str
    api_port: int
    api_workers: int | None
    api_limit_concurrency: int
    api_backlog: int

    @property
    def state_dir(self) -> Path:
        return self.platform.state_dir

    @property
    def deadline_s(self) -> float:
        return self.deadline_ms / 1000

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServingSettings:
        env = os.environ if environ is None else environ
        platform = Settings.from_env(environ)
        values = read_settings(SETTINGS_DOC, env)
        popular_cache = (
            values.pop("popular_cache") or platform.state_dir / "serving" / "popular_products.json"
        )
        return cls(platform=platform, popular_cache=popular_cache, **values)
