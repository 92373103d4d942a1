"""Prometheus metrics of the serving side (the API exposes them at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUEST_SECONDS = Histogram(
    "retail_api_request_seconds",
    "API request latency, from the request's start to its answer",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
ANSWERS = Counter(
    "retail_recommendations_total",
    "answers by entry point and fallback reason (none: the model answered)",
    ["origin", "fallback_reason"],
)
DEAD_LETTERS = Counter("retail_dead_letters_total", "events refused, by kind", ["origin", "kind"])
MODEL_INFO = Gauge(
    "retail_model_info", "1 for the model version and popular list being served", ["version", "popular_build"]
)
IN_FLIGHT = Gauge("retail_requests_in_flight", "recommendation requests being answered")
SHED = Counter(
    "retail_api_shed_total",
    "requests refused with 503 before the app read them (late: their budget spent waiting in front)",
    ["why"],
)
RELOADS = Counter("retail_model_reloads_total", "snapshots swapped in from the vector store")


def show_snapshot(snapshot) -> None:
    MODEL_INFO.clear()
    MODEL_INFO.labels(
        version=snapshot.model_version or "none", popular_build=snapshot.popular_build or "none"
    ).set(1)
    RELOADS.inc()
