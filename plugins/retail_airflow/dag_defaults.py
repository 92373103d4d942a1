"""One default_args factory for every DAG: owner, retries with exponential backoff, timeouts, alerts."""

from __future__ import annotations

from datetime import timedelta

from retail_airflow.notifiers import PlatformFailureNotifier


def platform_default_args(
    owner: str,
    *,
    retries: int = 3,
    retry_delay: timedelta = timedelta(seconds=30),
    max_retry_delay: timedelta = timedelta(minutes=10),
    execution_timeout: timedelta = timedelta(minutes=30),
) -> dict:
    return {
        "owner": owner,
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": max_retry_delay,
        "execution_timeout": execution_timeout,
        "on_failure_callback": PlatformFailureNotifier(),
    }
