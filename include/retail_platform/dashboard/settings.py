"""Settings of the dashboard room: where Superset is, what it reads, where spike alerts go."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from retail_platform.settings import Settings, float_setting, int_setting

# Marketing's own Slack channel (an incoming webhook); without it spike alerts go to the alerts file.
MARKETING_SLACK_CONN_ID = "slack_marketing"
DASHBOARD_SLUG = "demand-now"

SETTINGS_DOC: list[tuple[str, str, str]] = [
    (
        "AIRFLOW_CONN_SLACK_MARKETING",
        "unset",
        "marketing's Slack incoming webhook (`slackwebhook`, the URL as password) for demand-spike alerts; "
        "unset: they go to the alerts file",
    ),
    (
        "RETAIL_DASHBOARD_URL",
        "http://127.0.0.1:<port>/superset/dashboard/demand-now/",
        "the marketing dashboard's address, linked from spike alerts",
    ),
    (
        "RETAIL_SPIKE_ALERT_LOOKBACK_HOURS",
        "24",
        "a spike is announced when it is rising or its last rising hour is at most this old (older ones, "
        "e.g. in historical data, never are)",
    ),
    ("RETAIL_SUPERSET_HOST", "127.0.0.1", "the address Superset binds"),
    ("RETAIL_SUPERSET_PORT", "8088", "Superset's port"),
    (
        "RETAIL_SUPERSET_WAREHOUSE_URI",
        "duckdb:///<RETAIL_DUCKDB_PATH> (read-only)",
        "Superset's connection to the marts (SQLAlchemy URI), e.g. redshift+psycopg2://user:pass@host:5439/retail "
        "with a SELECT-only user",
    ),
    (
        "RETAIL_SUPERSET_METADATA_URI",
        "sqlite:///<state>/superset/superset.db",
        "Superset's own metadata database (users, dashboards); PostgreSQL in production",
    ),
    ("RETAIL_BI_VENV", "<project>/.venv-bi", "Superset's own virtual environment (from requirements-bi.txt)"),
]


@dataclass(frozen=True)
class DashboardSettings:
    platform: Settings
    superset_host: str
    superset_port: int
    dashboard_url: str
    spike_lookback_hours: float
    warehouse_uri: str
    metadata_uri: str
    bi_venv: Path

    @property
    def superset_dir(self) -> Path:
        """Superset's files on this machine: generated secrets, metadata database, logs."""
        return self.platform.state_dir / "superset"

    @property
    def superset_url(self) -> str:
        return f"http://{self.superset_host}:{self.superset_port}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> DashboardSettings:
        env = os.environ if environ is None else environ
        platform = Settings.from_env(environ)
        host = env.get("RETAIL_SUPERSET_HOST") or "127.0.0.1"
        port = int_setting(env, "RETAIL_SUPERSET_PORT", 8088)
        return cls(
            platform=platform,
            superset_host=host,
            superset_port=port,
            dashboard_url=env.get("RETAIL_DASHBOARD_URL")
            or f"http://{host}:{port}/superset/dashboard/{DASHBOARD_SLUG}/",
            spike_lookback_hours=float_setting(env, "RETAIL_SPIKE_ALERT_LOOKBACK_HOURS", 24.0),
            warehouse_uri=env.get("RETAIL_SUPERSET_WAREHOUSE_URI") or f"duckdb:///{platform.duckdb_path}",
            metadata_uri=env.get("RETAIL_SUPERSET_METADATA_URI")
            or f"sqlite:///{platform.state_dir / 'superset' / 'superset.db'}",
            bi_venv=Path(env.get("RETAIL_BI_VENV") or platform.project_dir / ".venv-bi"),
        )
