"""Settings of the serving side: the handler's budget, the stream, the lake batches and the API.

Its connection to the vector store, ``retail_vectors``, is documented with the recommender's settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from retail_platform.settings import SettingError, Settings, float_setting, int_setting

API_KEYS_CONN_ID = "retail_api_keys"

SETTINGS_DOC: list[tuple[str, str, str]] = [
    ("RETAIL_SERVING_DEADLINE_MS", "300", "per-event budget from arrival; past it the popular list answers"),
    ("RETAIL_SERVING_TOP_K", "10", "recommended and similar items per answer"),
    (
        "RETAIL_SERVING_MAX_IN_FLIGHT",
        "64",
        "requests handled at once by one process; beyond it requests are answered from the popular list",
    ),
    ("RETAIL_SERVING_BREAKER_FAILURES", "3", "consecutive vector-store failures that open the circuit"),
    ("RETAIL_SERVING_BREAKER_RESET_S", "5", "seconds the circuit stays open before one probe"),
    ("RETAIL_SERVING_POLL_S", "10", "how often the current version is polled (besides LISTEN/NOTIFY)"),
    (
        "RETAIL_SERVING_POPULAR_CACHE",
        "<state>/serving/popular_products.json",
        "last-resort copy of the popular list, for a cold start without the vector store",
    ),
    ("RETAIL_SERVING_MAX_EVENT_BYTES", "32768", "larger events are dead-lettered unread"),
    ("RETAIL_SERVING_MAX_QUANTITY", "1000", "a browse item's quantity above this is absurd (dead letter)"),
    ("RETAIL_SERVING_MAX_BROWSE_ITEMS", "200", "longest browse history an event may carry"),
    ("RETAIL_EVENTS_STREAM", "retail-shopper-events", "Kinesis stream the sales platform puts events on"),
    (
        "RETAIL_RECOMMENDATIONS_STREAM",
        "retail-recommendations",
        "Kinesis stream the output records go to, for the sales platform",
    ),
    ("RETAIL_KINESIS_SHARDS", "2", "sandbox: shards of each stream it creates"),
    ("RETAIL_KINESIS_PORT", "a free port", "sandbox: TCP port of moto's server (127.0.0.1 only)"),
    ("RETAIL_CONSUMER_POLL_MS", "50", "consumer: pause between reads of an idle shard"),
    ("RETAIL_LAKE_FLUSH_RECORDS", "500", "a shard's lake batch is written at this many records"),
    ("RETAIL_LAKE_FLUSH_S", "5", "or when its oldest record has waited this long"),
    (
        "RETAIL_API_KEYS",
        "unset: connection retail_api_keys",
        "API keys as name:key pairs, comma-separated; unset: the Airflow connection retail_api_keys "
        '(any backend; the password is one key, or extra {"keys": {name: key}})',
    ),
    ("RETAIL_API_HOST", "127.0.0.1", "the API's address"),
    ("RETAIL_API_PORT", "8600", "the API's port"),
    (
        "RETAIL_API_WORKERS",
        "unset: one a core, at most 2",
        "API worker processes (each holds its own vectors)",
    ),
    (
        "RETAIL_API_LIMIT_CONCURRENCY",
        "1024",
        "connections one API worker holds; past it a request gets 503 with Retry-After before the app runs "
        "(keep it above the callers' connection pools: each refusal closes its connection)",
    ),
    ("RETAIL_API_BACKLOG", "512", "the API's accept queue (new connections waiting for a worker)"),
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
    api_workers: int | None = None
    api_limit_concurrency: int = 1024
    api_backlog: int = 512

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
        settings = cls(
            platform=platform,
            deadline_ms=float_setting(env, "RETAIL_SERVING_DEADLINE_MS", 300.0),
            top_k=int_setting(env, "RETAIL_SERVING_TOP_K", 10),
            max_in_flight=int_setting(env, "RETAIL_SERVING_MAX_IN_FLIGHT", 64),
            breaker_failures=int_setting(env, "RETAIL_SERVING_BREAKER_FAILURES", 3),
            breaker_reset_s=float_setting(env, "RETAIL_SERVING_BREAKER_RESET_S", 5.0),
            poll_s=float_setting(env, "RETAIL_SERVING_POLL_S", 10.0),
            popular_cache=Path(
                env.get("RETAIL_SERVING_POPULAR_CACHE")
                or platform.state_dir / "serving" / "popular_products.json"
            ),
            max_event_bytes=int_setting(env, "RETAIL_SERVING_MAX_EVENT_BYTES", 32768),
            max_quantity=int_setting(env, "RETAIL_SERVING_MAX_QUANTITY", 1000),
            max_browse_items=int_setting(env, "RETAIL_SERVING_MAX_BROWSE_ITEMS", 200),
            events_stream=env.get("RETAIL_EVENTS_STREAM") or "retail-shopper-events",
            recommendations_stream=env.get("RETAIL_RECOMMENDATIONS_STREAM") or "retail-recommendations",
            kinesis_shards=int_setting(env, "RETAIL_KINESIS_SHARDS", 2),
            kinesis_port=int_setting(env, "RETAIL_KINESIS_PORT", None),
            consumer_poll_ms=float_setting(env, "RETAIL_CONSUMER_POLL_MS", 50.0),
            lake_flush_records=int_setting(env, "RETAIL_LAKE_FLUSH_RECORDS", 500),
            lake_flush_s=float_setting(env, "RETAIL_LAKE_FLUSH_S", 5.0),
            api_host=env.get("RETAIL_API_HOST") or "127.0.0.1",
            api_port=int_setting(env, "RETAIL_API_PORT", 8600),
            api_workers=int_setting(env, "RETAIL_API_WORKERS", None),
            api_limit_concurrency=int_setting(env, "RETAIL_API_LIMIT_CONCURRENCY", 1024),
            api_backlog=int_setting(env, "RETAIL_API_BACKLOG", 512),
        )
        settings.check()
        return settings

    def check(self) -> None:
        positive = {
            "RETAIL_SERVING_DEADLINE_MS": self.deadline_ms,
            "RETAIL_SERVING_TOP_K": self.top_k,
            "RETAIL_SERVING_MAX_IN_FLIGHT": self.max_in_flight,
            "RETAIL_SERVING_BREAKER_FAILURES": self.breaker_failures,
            "RETAIL_LAKE_FLUSH_RECORDS": self.lake_flush_records,
            "RETAIL_KINESIS_SHARDS": self.kinesis_shards,
            "RETAIL_API_WORKERS": self.api_workers or 1,
            "RETAIL_API_LIMIT_CONCURRENCY": self.api_limit_concurrency,
            "RETAIL_API_BACKLOG": self.api_backlog,
        }
        for name, value in positive.items():
            if value <= 0:
                raise SettingError(f"setting {name} must be positive, got {value}")
