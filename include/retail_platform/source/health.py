"""Source health: an outage (unreachable, or replication lag past a threshold) is announced
once to the downstream users, and its end once more.

The state lives beside the lake (``_state/<source>/health.json``), so the extraction DAG
and the schema watch share it and neither repeats the other's announcement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from retail_platform.alerts import Alert, deliver
from retail_platform.errors import ConfigurationError
from retail_platform.source.connection import MySQLConnectionInfo, SourceUnreachable, connect
from retail_platform.state import PlatformState, utcnow_iso

log = logging.getLogger(__name__)


def _alert(kind: str, title: str, text: str, channel: str | None, details: dict) -> Alert:
    return Alert.message(
        kind,
        title,
        text,
        link=details.get("run_url"),
        link_label="Airflow run",
        channel=channel,
        details=details,
    )


def report_outage(
    state: PlatformState,
    reason: str,
    *,
    channel: str | None = None,
    details: dict | None = None,
    settings=None,
    doing: str | None = None,
) -> bool:
    """Record that the source is down; announce it only the first time. Returns whether it announced.

    ``doing`` says what extraction does meanwhile (default: retrying an unreachable source)."""
    doc = state.get("health.json") or {}
    if doc.get("status") == "down":
        doc["last_seen_down"] = utcnow_iso()
        doc["last_reason"] = reason
        state.put(doc, "health.json")
        return False
    title = f"Source {state.source} is unavailable: data will be stale"
    doing = doing or "extraction is retrying with backoff"
    text = (
        f"*Why:* {reason}\n"
        f"*Impact:* {doing}; dashboards and training data will not get newer data until the source "
        "recovers. Another message will say when it does."
    )
    deliver(_alert("source_outage", title, text, channel, details or {}), settings)
    state.put(
        {"status": "down", "since": utcnow_iso(), "reason": reason, "last_seen_down": utcnow_iso()},
        "health.json",
    )
    return True


def report_healthy(
    state: PlatformState, *, channel: str | None = None, details: dict | None = None, settings=None
) -> bool:
    """Record that the source answers; announce the recovery if an outage was announced."""
    doc = state.get("health.json") or {}
    if doc.get("status") != "down":
        return False
    title = f"Source {state.source} recovered"
    text = f"Down since {doc.get('since')} ({doc.get('reason')}). Extraction resumes; data catches up in the next runs."
    deliver(_alert("source_recovered", title, text, channel, details or {}), settings)
    state.put({"status": "up", "since": utcnow_iso(), "previous_outage": doc}, "health.json")
    return True


class SourceNeverAnswered(ConfigurationError):
    pass


def connect_checked(state: PlatformState, info: MySQLConnectionInfo, **options):
    """Connect to the source, remembering that it answered.

    A source that does not answer is an outage when it answered before (SourceUnreachable, retried)
    and a configuration error when it never did: a wrong host or port would only retry in vain."""
    answered = state.get("connections.json") or {}
    try:
        conn = connect(info, **options)
    except SourceUnreachable as exc:
        if answered.get(info.conn_id, {}).get("endpoint") == info.endpoint:
            raise
        raise SourceNeverAnswered(
            f"connection {info.conn_id!r} points at {info.endpoint}, which has never answered: {exc}. "
            "Check the connection's host and port"
        ) from exc
    if answered.get(info.conn_id, {}).get("endpoint") != info.endpoint:
        answered[info.conn_id] = {"endpoint": info.endpoint, "first_answered": utcnow_iso()}
        state.put(answered, "connections.json")
    return conn


ACCESS_DENIED = (1227, 1142, 1044, 1045)  # MySQL/MariaDB privilege errors


@dataclass(frozen=True)
class ReplicaHealth:
    """What one look at the replica found: its lag, and why it counts as an outage (or None)."""

    lag_s: float | None  # None: not a replica, or replication stopped
    problem: str | None = None


def replica_status(conn) -> dict | None:
    """The server's replica status row, or None when it is not a replica."""
    with conn.cursor() as cur:
        for statement in ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS"):
            try:
                cur.execute(statement)
            except Exception as exc:
                if getattr(exc, "args", (None,))[0] in ACCESS_DENIED:
                    # Without REPLICA MONITOR / REPLICATION CLIENT the lag cannot be known: say so
                    # rather than pass a lagging replica as healthy in silence.
                    log.warning("replication status unreadable (%s): lag is not checked", exc)
                    return None
                continue  # older/newer servers know only one of the two statements
            row = cur.fetchone()
            if row is None:
                return None
            names = [d[0] for d in cur.description]
            return dict(zip(names, row, strict=False))
    return None


def assess_replica(conn, max_lag_s: float) -> ReplicaHealth:
    """The one rule the watch and the extraction share: a replica whose replication stopped
    (NULL seconds behind) or lags more than ``max_lag_s`` serves stale data: an outage."""
    status = replica_status(conn)
    if status is None:
        return ReplicaHealth(None)
    lag = status.get("Seconds_Behind_Master", status.get("Seconds_Behind_Source"))
    if lag is None:
        io = status.get("Slave_IO_Running", status.get("Replica_IO_Running"))
        sql = status.get("Slave_SQL_Running", status.get("Replica_SQL_Running"))
        error = status.get("Last_Error") or status.get("Last_IO_Error") or status.get("Last_SQL_Error")
        detail = f"IO thread {io}, SQL thread {sql}" + (f": {error}" if error else "")
        return ReplicaHealth(None, f"replication is stopped on the replica ({detail})")
    lag = float(lag)
    if lag > max_lag_s:
        return ReplicaHealth(lag, f"replication lag {lag:.0f} s is above {max_lag_s:.0f} s")
    return ReplicaHealth(lag)


def report(
    state: PlatformState,
    health: ReplicaHealth,
    *,
    channel: str | None = None,
    details: dict | None = None,
    settings=None,
) -> bool:
    """Announce an outage or a recovery as the assessment says; returns whether it announced."""
    details = dict(details or {})
    if health.problem:
        if health.lag_s is not None:
            details["lag_s"] = health.lag_s
        return report_outage(
            state,
            health.problem,
            channel=channel,
            details=details,
            settings=settings,
            doing="the replica answers but is behind the store: extraction goes on with what it has",
        )
    return report_healthy(state, channel=channel, details=details, settings=settings)
