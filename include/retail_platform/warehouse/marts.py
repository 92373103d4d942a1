"""What a finished build publishes with its Asset event: row counts and how fresh the marts are."""

from __future__ import annotations

from datetime import UTC, datetime

from retail_platform.settings import Settings

SUMMARY_QUERIES = {
    "hourly_demand_rows": "select count(*) from analytics.fct_hourly_demand",
    "spikes": "select count(*) from analytics.fct_demand_spikes",
    "rising_spikes": "select count(*) from analytics.fct_demand_spikes where is_rising",
    "training_rows": "select count(*) from ml.ratings_ml_training",
    "data_as_of": "select max(last_ordered_at) from analytics.fct_hourly_demand",
}


def marts_summary(settings: Settings | None = None) -> dict:
    settings = settings or Settings.from_env()
    if settings.dbt_target != "local":
        return {"target": settings.dbt_target}
    from retail_platform.warehouse.snapshots import read_only

    with read_only(settings) as conn:  # what readers see: the published build
        summary = {name: conn.execute(sql).fetchone()[0] for name, sql in SUMMARY_QUERIES.items()}
    as_of = summary["data_as_of"]
    summary["data_as_of"] = as_of.replace(tzinfo=UTC).isoformat() if as_of else None
    summary["built_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    summary["target"] = settings.dbt_target
    return summary
