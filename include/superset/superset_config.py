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

# "Last day / week / month" end now, not at midnight: the page's "last 7 days" is the 7 days up to
# now, the same week the popular products and the spikes are counted in.
DEFAULT_RELATIVE_START_TIME = "now"
DEFAULT_RELATIVE_END_TIME = "now"

# No usage tracking. SCARF_ANALYTICS is Superset's documented switch, but it is read when the
# frontend is built, and the wheel's frontend always renders Scarf's tracking pixel (an <img> of
# apachesuperset.gateway.scarf.sh): the script that draws it is served with the pixel's address
# turned into an empty data: URL, so the browser asks nothing of anyone. Beyond that, the
# Content-Security-Policy below lets the page load nothing from any other address (beacon, font,
# map tile).
os.environ.setdefault("SCARF_ANALYTICS", "false")
TRACKING_PIXEL = b"https://apachesuperset.gateway.scarf.sh/pixel/"
_ASSETS_WITH_PIXEL: dict[str, bool] = {}


def _without_tracking_pixel(response):
    from flask import request

    path = request.path
    if not (path.startswith("/static/assets/") and path.endswith(".js")) or response.status_code != 200:
        return response
    if _ASSETS_WITH_PIXEL.get(path) is False:
        return response
    response.direct_passthrough = False
    body = response.get_data()
    _ASSETS_WITH_PIXEL[path] = TRACKING_PIXEL in body
    if _ASSETS_WITH_PIXEL[path]:
        response.set_data(body.replace(TRACKING_PIXEL, b"data:,"))
    return response


def FLASK_APP_MUTATOR(app):
    app.after_request(_without_tracking_pixel)


TALISMAN_ENABLED = True
TALISMAN_CONFIG = {
    "content_security_policy": {
        "base-uri": ["'self'"],
        "default-src": ["'self'"],
        "img-src": ["'self'", "blob:", "data:"],
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "object-src": "'none'",
        "style-src": ["'self'", "'unsafe-inline'"],
        "font-src": ["'self'", "data:"],
        "script-src": ["'self'", "'strict-dynamic'"],
    },
    "content_security_policy_nonce_in": ["script-src"],
    "force_https": False,
    "session_cookie_secure": False,
}
CONTENT_SECURITY_POLICY_WARNING = False

# Marketing clicks a spike or a country and the page follows (cross-filters).
FEATURE_FLAGS["DASHBOARD_CROSS_FILTERS"] = True
