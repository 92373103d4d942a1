"""One run of the schema watch: read the replica's schema once, compare, protect, decide what to tell.

* Drift is the difference between the source contract (what the platform accepted) and the live
  schema; it decides which tables are paused (breaking drift) and resumed (none left: an operator
  updated the contract, or the change was reverted).
* History: every schema that differs from the last one seen is kept (``_state/<source>/schema/``).
* Announcements: each drift item is announced once; a breaking one that stays unresolved past
  ``RETAIL_SCHEMA_REMINDER_HOURS`` is announced again. Default changes (not in the contract) are
  announced when they first differ from the last schema seen.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from retail_platform.contract.model import Contract
from retail_platform.errors import ConsequentialFailure
from retail_platform.schema_watch.changes import (
    BREAKING,
    Change,
    breaking_tables,
    diff_schemas,
    shapes_from_contract,
    shapes_from_live,
)
from retail_platform.schema_watch.lineage import load_index
from retail_platform.settings import Settings
from retail_platform.source import health
from retail_platform.source.connection import SourceUnreachable, source_connection
from retail_platform.source.introspect import LiveSchema, read_live_schema
from retail_platform.sources import names_for
from retail_platform.state import PlatformState, state_for, utcnow_iso

log = logging.getLogger(__name__)
ANNOUNCEMENTS = ("schema", "announcements.json")
PENDING_RESUMED = ("schema", "resumed_unannounced.json")


class SourceUnavailable(ConsequentialFailure):
    """The replica did not answer; the outage was announced by the health check."""


def lineage_for(settings: Settings, *, compile_when_stale: bool = False) -> dict | None:
    """The dbt column lineage, or None (then every dropped column counts as used: conservative).

    Tasks read the manifest the deployment compiled (``retail warehouse prepare``) and never compile
    themselves: two tasks compiling into one target folder at once would corrupt it."""
    from retail_platform.warehouse.dbt_runner import ensure_manifest, manifest_path

    try:
        path = ensure_manifest(settings) if compile_when_stale else manifest_path(settings)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing (run `retail warehouse prepare`)")
        return load_index(path)
    except Exception as exc:  # a watch without lineage still protects the pipeline
        log.warning("no dbt lineage (%s): dropped or narrowed columns are treated as used", exc)
        return None


def evaluate_drift(contract: Contract, live: LiveSchema, lineage: dict | None) -> list[Change]:
    return diff_schemas(
        shapes_from_contract(contract), shapes_from_live(live), contract=contract, lineage=lineage
    )


def protect(state: PlatformState, contract: Contract, drift: list[Change]) -> tuple[dict, list[str]]:
    """Pause tables with breaking drift; resume paused tables that have none left."""
    breaking = breaking_tables(drift)
    paused_now = {}
    current = state.pauses()
    for table, changes in breaking.items():
        if table not in contract.tables or table in current:
            continue
        reason = "; ".join(f"{c.describe()} ({c.reason})" for c in changes)
        paused_now[table] = state.pause(
            table,
            reason,
            changes=[c.to_dict() for c in changes],
            by="schema-watch",
        )
    resumed = []
    for table in current:
        if table not in breaking:
            # Owed to its owners until delivered: whichever run delivers it (the extraction's plan or
            # the watch's notify task), a failed delivery is retried, and none is made twice.
            pending = state.get(*PENDING_RESUMED) or {}
            state.put(pending | {table: utcnow_iso()}, *PENDING_RESUMED)
            state.unpause(table)
            resumed.append(table)
    return paused_now, sorted(resumed)


def run_watch(
    settings: Settings, source: str, *, run_url: str | None = None, now: datetime | None = None
) -> dict:
    now = now or datetime.now(UTC)
    contract = names_for(settings, source).load_contract()
    state = state_for(settings, contract.source.name)
    reader = source_connection(contract.source.connection_id)
    channel = contract.source.downstream_channel
    started = time.perf_counter()
    try:
        conn = health.connect_checked(state, reader, connect_timeout=10)
        try:
            live = read_live_schema(reader, conn)
            query_s = time.perf_counter() - started
            replica = health.assess_replica(conn, settings.max_replication_lag_s)
        finally:
            conn.close()
    except SourceUnreachable as exc:
        health.report_outage(
            state,
            f"{type(exc).__name__}: {exc}",
            channel=channel,
            details={"run_url": run_url},
            settings=settings,
        )
        raise SourceUnavailable(f"the replica {reader.describe()} did not answer: {exc}") from exc
    health.report(state, replica, channel=channel, details={"run_url": run_url}, settings=settings)

    last_doc = state.get("schema", "latest.json")
    snapshot = live.to_dict()
    if last_doc is None or last_doc.get("tables") != snapshot["tables"]:
        state.put(snapshot, "schema", "history", f"{now:%Y%m%dT%H%M%SZ}.json")
    state.put(snapshot | {"checked_at": now.isoformat()}, "schema", "latest.json")

    lineage = lineage_for(settings)
    drift = evaluate_drift(contract, live, lineage)
    # Changes since the last schema seen that the contract does not capture (defaults, optional
    # columns appearing or going): announced once, never a reason to pause.
    since_last = []
    if last_doc is not None:
        previous = LiveSchema.from_dict(last_doc)
        in_drift = {(c.table, c.column) for c in drift}
        since_last = [
            c
            for c in diff_schemas(
                shapes_from_live(previous),
                shapes_from_live(live),
                contract=contract,
                lineage=lineage,
                compare_defaults=True,
            )
            if (c.table, c.column) not in in_drift
        ]
        for change in since_last:
            change.severity = "additive"
    paused, resumed = protect(state, contract, drift)

    announced = state.get(*ANNOUNCEMENTS) or {}
    reminder = timedelta(hours=settings.schema_reminder_hours)
    to_announce, to_remind = [], []
    for change in drift + since_last:
        record = announced.get(change.key)
        if record is None:
            to_announce.append(change)
        elif (
            change.severity == BREAKING and now - datetime.fromisoformat(record["last_notified"]) >= reminder
        ):
            to_remind.append(change)
    resolved = sorted(set(announced) - {c.key for c in drift + since_last})
    pauses = state.pauses()
    return {
        "source": contract.source.name,
        "replica": reader.describe(),
        "seen_at": now.isoformat(timespec="seconds"),
        "query_s": round(query_s, 4),
        "tables": len(live.tables),
        "replication_lag_s": replica.lag_s,
        "replica_problem": replica.problem,
        "drift": [c.to_dict() for c in drift],
        "announce": [c.to_dict() for c in to_announce],
        "remind": [c.to_dict() for c in to_remind],
        "resolved": resolved,
        "paused": {t: pauses[t]["reason"] for t in paused},
        "still_paused": sorted(pauses),
        "resumed": resumed,
        "run_url": run_url,
    }


def delivered_for(settings: Settings, report: dict) -> set[str]:
    """The keys already announced for this very report: a retried notify task skips them."""

    announced = state_for(settings, report["source"]).get(*ANNOUNCEMENTS) or {}
    return {k for k, record in announced.items() if record.get("last_notified") == report["seen_at"]}


def record_announced(settings: Settings, report: dict, sent_keys: list[str]) -> None:
    """After delivery: remember what was said (and forget what got resolved)."""

    state = state_for(settings, report["source"])
    announced = state.get(*ANNOUNCEMENTS) or {}
    for key in report["resolved"]:
        announced.pop(key, None)
    by_key = {c["key"]: c for c in report["announce"] + report["remind"]}
    for key in sent_keys:
        record = announced.get(key) or {"first_announced": utcnow_iso(), "change": by_key.get(key)}
        record["last_notified"] = report["seen_at"]
        announced[key] = record
    state.put(announced, *ANNOUNCEMENTS)
