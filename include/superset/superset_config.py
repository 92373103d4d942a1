"""Superset's configuration for the retail platform (SUPERSET_CONFIG_PATH points here).

Everything secret or machine-specific comes from the environment, which the launcher
(`retail dashboard`, or a deployment) sets; nothing secret is in this file:

* SUPERSET_SECRET_KEY: signs sessions and encrypts stored connection passwords (required);
* RETAIL_SUPERSET_METADATA_URI: Superset's own metadata database (users, dashboards);
* SUPERSET_HOME: where Superset keeps its files (Superset's own variable).

The warehouse connection itself is part of the dashboard bundle (include/superset/bundle), set
at import time by configuration.
"""

import os
from datetime import UTC, datetime

SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]
SQLALCHEMY_DATABASE_URI = os.environ["RETAIL_SUPERSET_METADATA_URI"]

APP_NAME = "Retail platform"

FEATURE_FLAGS = {
    # Saved metrics may use the macros below (the data-age metric needs the current time in a form
    # both DuckDB and Redshift read).
    "ENABLE_TEMPLATE_PROCESSING": True,
    # Dashboards list only what a role may see.
    "DASHBOARD_RBAC": True,
}


def _utc_now_sql() -> str:
    """The current UTC time as a SQL timestamp literal (naive, like the marts' timestamps)."""
    return f"timestamp '{datetime.now(UTC):%Y-%m-%d %H:%M:%S}'"


JINJA_CONTEXT_ADDONS = {"utc_now_sql": _utc_now_sql}

# Query results are never cached: a new warehouse build shows at the next refresh.
DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}
# No file uploads into the warehouse, no CSV exports of raw tables beyond what a chart shows.
ALLOWED_EXTENSIONS: set[str] = set()
