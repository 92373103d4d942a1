"""Settings of the dashboard room: where Superset is, what it reads, where spike alerts go."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from retail_platform.settings import Setting, Settings, read_settings

# Marketing's own Slack channel (an incoming webhook); without it spike alerts go to the alerts file.
MARKETING_SLACK_CONN_ID = "slack_marketing"
DASHBOARD_SLUG = "demand-now"

SETTINGS_DOC: list[Setting] = [
    Setting(
        "AIRFLOW_CONN_SLACK_MARKETING",
        None,
        "marketing's Slack incoming webhook (`slackwebhook`, the URL as password) for demand-spike "
        "alerts; unset: they go to the alerts file",
    ),
    Setting(
        "RETAIL_DASHBOARD_URL",
        None,
        "the marketing dashboard's address, linked from spike alerts",
        attr="dashboard_url",
        shown="http://<RETAIL_SUPERSET_HOST>:<RETAIL_SUPERSET_PORT>/superset/dashboard/demand-now/",
    ),
    Setting(
        "RETAIL_SPIKE_ALERT_LOOKBACK_HOURS",
        24.0,
        "a spike is announced when it is rising or its last rising hour is at most this old (older "
        "ones, e.g. in historical data, never are)",
        float,
        "spike_lookback_hours",
    ),
    Setting(
        "RETAIL_SUPERSET_HOST",
        "127.0.0.1",
        "the address Superset binds",
        attr="superset_host",
    ),
    Setting(
        "RETAIL_SUPERSET_PORT",
        8088,
        "Superset's port",
        int,
        "superset_port",
    ),
    Setting(
        "RETAIL_SUPERSET_WAREHOUSE_URI",
        None,
        "Superset's connection to the marts (SQLAlchemy URI), e.g. "
        "redshift+psycopg2://user:pass@host:5439/retail with a SELECT-only user",
        attr="warehouse_uri",
        shown="duckdb:///<RETAIL_DUCKDB_PATH> (read-only)",
    ),
    Setting(
        "RETAIL_SUPERSET_METADATA_URI",
        None,
        "Superset's own metadata database (users, dashboards); PostgreSQL in production",
        attr="metadata_uri",
        shown="sqlite:///<state>/superset/superset.db",
    ),
    Setting(
        "RETAIL_BI_VENV",
        None,
        "Superset's own virtual environment (from requirements-bi.txt)",
        Path,
        "bi_venv",
        shown="<project>/.venv-bi",
    ),
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
        values = read_settings(SETTINGS_DOC, env)
        host, port = values["superset_host"], values["superset_port"]
        # Defaults that follow other settings.
        derived = {
            "dashboard_url": values["dashboard_url"]
            or f"http://{host}:{port}/superset/dashboard/{DASHBOARD_SLUG}/",
            "warehouse_uri": values["warehouse_uri"] or f"duckdb:///{platform.duckdb_path}",
            "metadata_uri": values["metadata_uri"]
            or f"sqlite:///{platform.state_dir / 'superset' / 'superset.db'}",
            "bi_venv": values["bi_venv"] or platform.project_dir / ".venv-bi",
        }
        return cls(platform=platform, **{**values, **derived})
