"""One default_args factory for every DAG: owner, retries with exponential backoff, timeouts, alerts.

Outages are retried with exponential backoff (all retries, longest jitter: a few minutes). A run
never overlaps the next whatever the extraction interval: each DAG runs one run at a time
(`max_active_runs=1`), so at a short interval a retrying run delays the next one instead. A
configuration problem (storage that cannot be written included), a failure that composed its own
alert (a failed dbt test, a lock still held after its wait), or a failure whose cause
upstream was already reported, is not retried at all: no retry can fix it (the retry policy).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule

from retail_airflow.notifiers import PlatformFailureNotifier
from retail_platform.errors import ConfigurationError, ConsequentialFailure, ReportedFailure

CONFIGURATION_ERRORS_FAIL = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=ConfigurationError,
            action=RetryAction.FAIL,
            reason="a configuration problem: retrying cannot fix it",
        ),
        RetryRule(
            exception=ReportedFailure,
            action=RetryAction.FAIL,
            reason="a failed dbt test or a held lock after its wait: a retry meets the same",
        ),
        RetryRule(
            exception=ConsequentialFailure,
            action=RetryAction.FAIL,
            reason="its cause upstream failed and was reported: retrying cannot fix it",
        ),
    ]
)


def platform_default_args(
    owner: str,
    *,
    retries: int = 3,
    retry_delay: timedelta = timedelta(seconds=20),
    max_retry_delay: timedelta = timedelta(minutes=2),
    execution_timeout: timedelta = timedelta(minutes=30),
) -> dict:
    return {
        "owner": owner,
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": max_retry_delay,
        "retry_policy": CONFIGURATION_ERRORS_FAIL,
        "execution_timeout": execution_timeout,
        "on_failure_callback": PlatformFailureNotifier(),
    }
