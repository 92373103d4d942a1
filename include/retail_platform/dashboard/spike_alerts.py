"""Demand-spike alerts, pushed to marketing after each warehouse build.

Marketing wants to know about a spike while it happens, not when someone next opens the
dashboard. After the transform publishes a build, every spike that is happening (still rising,
or whose last rising hour is within RETAIL_SPIKE_ALERT_LOOKBACK_HOURS) and has not been announced
goes to marketing's channel once: Slack Block Kit through the `slack_marketing` connection, else
the alerts file. Spikes in historical data are never announced.

The message's button opens the dashboard filtered to the spike's product and country.

Each announcement is recorded in the lake's state (`_state/dashboard/spike_alerts.json`) as soon
as it is delivered: a retry after a failed delivery sends only the rest, and a rerun of the same
build announces nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from retail_platform.alerts import Alert, context, deliver, header
from retail_platform.dashboard.links import spike_dashboard_url
from retail_platform.dashboard.settings import MARKETING_SLACK_CONN_ID, DashboardSettings
from retail_platform.lake.storage import LakeStorage
from retail_platform.settings import Settings
from retail_platform.state import PlatformState, utcnow_iso

log = logging.getLogger(__name__)

STATE_NAMESPACE = "dashboard"
STATE_FILE = "spike_alerts.json"
MARKETING_CHANNEL = "#marketing"
SPIKE_COLUMNS = (
    "spike_id",
    "product_code",
    "product_name",
    "product_line",
    "country",
    "region",
    "spike_start",
    "last_rising_hour",
    "rising_hours",
    "peak_orders",
    "strength",
    "is_rising",
)


@dataclass(frozen=True)
class DemandSpike:
    """One row of analytics.fct_demand_spikes (timestamps naive UTC, as in the marts)."""

    spike_id: str
    product_code: str
    product_name: str
    product_line: str | None
    country: str
    region: str | None
    spike_start: datetime
    last_rising_hour: datetime
    rising_hours: int
    peak_orders: int
    strength: float
    is_rising: bool

    @classmethod
    def from_row(cls, row: dict) -> DemandSpike:
        return cls(
            **{name: row[name] for name in SPIKE_COLUMNS if name not in ("strength", "is_rising")},
            strength=float(row["strength"]),
            is_rising=bool(row["is_rising"]),
        )


def spikes_query(since: datetime) -> str:
    """Spikes happening now or lately; portable SQL (DuckDB and Redshift), the published schema."""
    return (
        f"select {', '.join(SPIKE_COLUMNS)} from analytics.fct_demand_spikes "
        f"where is_rising or last_rising_hour >= cast('{since:%Y-%m-%d %H:%M:%S}' as timestamp) "
        "order by spike_start, spike_id"
    )


def read_recent_spikes(settings: Settings, since: datetime) -> list[DemandSpike]:
    """What readers see: the published DuckDB snapshot, or the live schemas on Redshift."""
    sql = spikes_query(since)
    if settings.dbt_target == "local":
        from retail_platform.warehouse.snapshots import read_only

        with read_only(settings) as conn:
            cursor = conn.execute(sql)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    else:
        rows = _query_with_dbt(sql, settings)
    return [DemandSpike.from_row(row) for row in rows]


def _query_with_dbt(sql: str, settings: Settings) -> list[dict]:
    """Run a query on the dbt target's connection (Redshift in production): no second driver."""
    from retail_platform.warehouse.dbt_runner import run_dbt

    result = run_dbt(["show", "--inline", sql, "--limit", "1000"], settings)
    table = result.results[0].agate_table
    return [dict(zip(table.column_names, row, strict=True)) for row in table.rows]


def spike_alert(spike: DemandSpike, dashboard_url: str) -> Alert:
    """One Block Kit message: product, country, start, strength, still rising, and a button that
    opens the dashboard filtered to the spike's product and country."""
    dashboard_url = spike_dashboard_url(dashboard_url, spike.product_name, spike.product_code, spike.country)
    line = f", {spike.product_line}" if spike.product_line else ""
    region = f" ({spike.region})" if spike.region else ""
    started = f"{spike.spike_start:%Y-%m-%d %H:%M} UTC, {spike.rising_hours} hours rising"
    strength = f"{spike.strength:,.1f}× its usual hourly orders (peak {spike.peak_orders} orders an hour)"
    rising = (
        "yes: orders rose again in the latest hour"
        if spike.is_rising
        else f"no: the last rise was at {spike.last_rising_hour:%Y-%m-%d %H:%M} UTC"
    )
    fields = {
        "Product": f"{spike.product_name} (`{spike.product_code}`{line})",
        "Country": f"{spike.country}{region}",
        "Started": started,
        "Strength": strength,
        "Still rising": rising,
    }
    title = f"Demand spike: {spike.product_name} in {spike.country}"
    text = "\n".join(f"*{name}*: {value}" for name, value in fields.items())
    blocks = [
        header(f"{'📈' if spike.is_rising else '📊'} {title}"),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields.items()]},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open the dashboard"},
                    "url": dashboard_url,
                }
            ],
        },
        context(f"Spike `{spike.spike_id[:12]}` · <{dashboard_url}|Demand now>"),
    ]
    return Alert(
        kind="demand_spike",
        title=title,
        text=f"{title}\n{text}\nDashboard: {dashboard_url}",
        blocks=blocks,
        channel=MARKETING_CHANNEL,
        details={
            "spike_id": spike.spike_id,
            "product_code": spike.product_code,
            "country": spike.country,
            "spike_start": spike.spike_start.isoformat(),
            "strength": spike.strength,
            "is_rising": spike.is_rising,
            "dashboard_url": dashboard_url,
        },
    )


def spike_state(settings: Settings) -> PlatformState:
    storage = LakeStorage.from_uri(settings.lake_uri, s3_endpoint_url=settings.s3_endpoint_url)
    return PlatformState(storage, STATE_NAMESPACE)


def announce_spikes(
    settings: Settings, dashboard: DashboardSettings | None = None, *, now: datetime | None = None
) -> dict:
    """Announce each happening spike not announced yet; returns what was announced."""
    dashboard = dashboard or DashboardSettings.from_env()
    now = now or datetime.now(UTC)
    since = (now - timedelta(hours=dashboard.spike_lookback_hours)).astimezone(UTC).replace(tzinfo=None)
    spikes = read_recent_spikes(settings, since)
    state = spike_state(settings)
    doc = state.get(STATE_FILE) or {"announced": {}}
    announced, where = [], None
    for spike in spikes:
        if spike.spike_id in doc["announced"]:
            continue
        where = deliver(
            spike_alert(spike, dashboard.dashboard_url), settings, conn_id=MARKETING_SLACK_CONN_ID
        )
        doc["announced"][spike.spike_id] = {
            "product_code": spike.product_code,
            "country": spike.country,
            "spike_start": spike.spike_start.isoformat(),
            "announced_at": utcnow_iso(),
        }
        state.put(doc, STATE_FILE)  # recorded per message: a retry never repeats one
        announced.append(spike.spike_id)
    _forget_old(
        doc,
        keep={s.spike_id for s in spikes},
        before=now - 2 * timedelta(hours=dashboard.spike_lookback_hours),
    )
    state.put(doc, STATE_FILE)
    log.info("demand spikes: %d happening, %d announced now (%s)", len(spikes), len(announced), where or "-")
    return {"happening": len(spikes), "announced": announced, "delivered_to": where}


def _forget_old(doc: dict, *, keep: set[str], before: datetime) -> None:
    """Drop records of spikes no longer happening and announced long ago: the state stays small,
    and such a spike is outside the lookback, so it cannot be announced again."""
    for spike_id, record in list(doc["announced"].items()):
        if spike_id not in keep and datetime.fromisoformat(record["announced_at"]) < before:
            del doc["announced"][spike_id]
