"""Links into the Airflow UI for messages."""

from __future__ import annotations

from urllib.parse import quote


def run_url(dag_run) -> str | None:
    if dag_run is None:
        return None
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    return f"{base}/dags/{quote(dag_run.dag_id)}/runs/{quote(dag_run.run_id)}"
