"""What the extraction DAGs' tasks call: plan a run, extract a table, summarise the run.

Kept free of Airflow so the same steps run from the CLI (`retail extract`) and in tests. Every
function takes the source by name (a contract in the contracts folder): its connection, lake
prefix and state come from that contract.
"""

from __future__ import annotations

import logging
from datetime import datetime

from retail_platform.errors import ConsequentialFailure, StorageUnusable, unhealable_storage_cause
from retail_platform.extract.local_engine import extract_batch
from retail_platform.extract.plan import TablePlan, plan_extraction
from retail_platform.lake.batches import lake_for
from retail_platform.settings import Settings
from retail_platform.source import health
from retail_platform.source.connection import source_connection
from retail_platform.source.introspect import read_live_schema
from retail_platform.sources import names_for
from retail_platform.state import state_for

log = logging.getLogger(__name__)


def plan_run(settings: Settings, source: str, interval_start: datetime, interval_end: datetime, **options):
    """Plan the run (``_plan_run``); a lake that cannot be written (its state lives there) is a
    configuration problem naming the source's every table, never retried as an outage."""
    try:
        return _plan_run(settings, source, interval_start, interval_end, **options)
    except Exception as exc:
        fault = unhealable_storage_cause(exc)
        if fault is None:
            raise
        tables = ", ".join(sorted(names_for(settings, source).load_contract().tables))
        raise StorageUnusable(
            f"the lake {settings.lake_uri} cannot be written ({fault}); no table of {source} can be "
            f"extracted until it can: {tables}"
        ) from exc


def _plan_run(
    settings: Settings,
    source: str,
    interval_start: datetime,
    interval_end: datetime,
    *,
    tables: list[str] | None = None,
    run_url: str | None = None,
) -> list[TablePlan]:
    """Read the live schema once, check the replica's health and plan every table.

    The schema watch's rules apply here too, so a breaking change is held back even before the
    watch's next run: tables with breaking drift are paused, those whose drift is resolved resume
    (and their owners are told), and a lagging or stopped replica is announced as an outage."""
    from retail_platform.schema_watch.notify import announce_resumed
    from retail_platform.schema_watch.watch import evaluate_drift, lineage_for, protect

    contract = names_for(settings, source).load_contract()
    reader = source_connection(contract.source.connection_id)
    state = state_for(settings, contract.source.name)
    # A replica that answered before and does not now is an outage (the task retries with backoff);
    # one that never answered has a wrong host or port (a configuration error: no retries).
    conn = health.connect_checked(state, reader, connect_timeout=10)
    try:
        live = read_live_schema(reader, conn)
        replica = health.assess_replica(conn, settings.max_replication_lag_s)
    finally:
        conn.close()
    channel = contract.source.downstream_channel
    health.report(state, replica, channel=channel, details={"run_url": run_url}, settings=settings)
    protect(state, contract, evaluate_drift(contract, live, lineage_for(settings)))
    try:
        announce_resumed(contract, settings)
    except Exception:  # the tables are extracted either way; the message stays owed and is retried
        log.exception("could not announce the resumed tables: the next run (or the schema watch) retries")
    plans = plan_extraction(
        contract,
        live,
        interval_start=interval_start,
        interval_end=interval_end,
        pauses=state.pauses(),
        tables=tables,
    )
    for plan in plans:
        if plan.skip_reason:
            log.warning("%s skipped: %s", plan.table, plan.skip_reason)
    return plans


def run_local(settings: Settings, plan: TablePlan | dict) -> dict:
    """Extract one planned table with the local engine; returns a small summary for XCom."""
    plan = TablePlan.from_dict(plan)
    names = names_for(settings, plan.source)
    manifest = extract_batch(
        plan,
        reader=source_connection(names.connection_id),
        lake=lake_for(settings, plan.source),
        statement_timeout_s=settings.statement_timeout_s,
    )
    return summarise(manifest)


def summarise(manifest: dict) -> dict:
    return {
        "table": manifest["table"],
        "batch_id": manifest["batch_id"],
        "mode": manifest["mode"],
        "rows": manifest["row_count"],
        "cursor": manifest.get("cursor") or None,
        "new_columns": manifest.get("new_columns", []),
        "reconciliation": manifest["reconciliation"]["detail"],
        "engine": manifest.get("engine"),
    }


def report_source_outage(settings: Settings, source: str, reason: str, run_url: str | None = None) -> bool:
    contract = names_for(settings, source).load_contract()
    return health.report_outage(
        state_for(settings, source),
        reason,
        channel=contract.source.downstream_channel,
        details={"run_url": run_url},
        settings=settings,
    )


def collect_committed(settings: Settings, plans: list[dict] | None) -> list[dict]:
    """After the Glue jobs: the summaries of the batches committed since they were planned.

    A table without one (its job failed, or reported success without committing) is left out
    and logged; the publish step then treats it as failed and applies the critical-table rule,
    as it does for the local engine."""
    if plans is None:
        raise ConsequentialFailure("no plan for this run (plan_batches failed and was reported)")
    typed = [TablePlan.from_dict(p) for p in plans]
    results, missing = [], []
    for plan in typed:
        if not plan.runnable:
            continue
        manifest = lake_for(settings, plan.source).read_manifest(plan.table, plan.batch_id)
        if manifest is None or datetime.fromisoformat(manifest["extracted_at"]) < plan.planned_at:
            missing.append(plan.table)
            continue
        results.append(summarise(manifest))
    if missing:
        log.error(
            "no batch was committed for %s (batch %s): the Glue job failed or reported success "
            "without committing",
            ", ".join(missing),
            typed[0].batch_id,
        )
    return results
