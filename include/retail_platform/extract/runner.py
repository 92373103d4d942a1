"""What the extraction DAG's tasks call: plan a run, extract a table, summarise the run.

Kept free of Airflow so the same steps run from the CLI (`retail extract`) and in tests.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime

from retail_platform.contract.model import Contract, load_contract
from retail_platform.extract.local_engine import extract_batch
from retail_platform.extract.plan import plan_extraction
from retail_platform.lake.batches import RawLake
from retail_platform.lake.storage import LakeStorage
from retail_platform.settings import Settings
from retail_platform.source import health
from retail_platform.source.connection import source_connection
from retail_platform.source.introspect import read_live_schema
from retail_platform.state import PlatformState

log = logging.getLogger(__name__)


def lake_for(settings: Settings, source: str = "classicmodels") -> RawLake:
    return RawLake(LakeStorage.from_uri(settings.lake_uri, s3_endpoint_url=settings.s3_endpoint_url), source)


def state_for(settings: Settings, source: str = "classicmodels") -> PlatformState:
    return PlatformState(lake_for(settings, source).storage, source)


def table_fingerprint(contract: Contract, table: str) -> str:
    """Identifies a table's contract section: a pause ends when an operator changes it."""
    doc = contract.tables[table].model_dump(mode="json")
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def plan_run(
    settings: Settings,
    interval_start: datetime,
    interval_end: datetime,
    *,
    tables: list[str] | None = None,
    run_url: str | None = None,
) -> list[dict]:
    """Read the live schema once and plan every table; pauses a table on its first contract error."""
    contract = load_contract(settings.contract_path)
    reader = source_connection("reader", settings)
    live = read_live_schema(reader)  # a down replica raises here: the task retries with backoff
    state = state_for(settings, contract.source.name)
    health.report_healthy(
        state, channel=contract.source.downstream_channel, details={"run_url": run_url}, settings=settings
    )
    # The schema watch's rule, applied here too so a breaking change is held back even before the
    # watch's next run: pause tables with breaking drift, resume those whose drift is resolved.
    from retail_platform.schema_watch.watch import evaluate_drift, lineage_for, protect

    protect(state, contract, evaluate_drift(contract, live, lineage_for(settings)))
    plans = plan_extraction(
        contract,
        live,
        interval_start=interval_start,
        interval_end=interval_end,
        pauses=state.pauses(),
        tables=tables,
    )
    for plan in plans:
        if plan["error"]:
            # Later runs skip the table with this reason until the contract is updated.
            state.pause(
                plan["table"],
                plan["error"],
                by="extract_replica",
                contract_fingerprint=table_fingerprint(contract, plan["table"]),
            )
        elif plan["skip_reason"]:
            log.warning("%s skipped: %s", plan["table"], plan["skip_reason"])
    return plans


def run_local(settings: Settings, plan: dict) -> dict:
    """Extract one planned table with the local engine; returns a small summary for XCom."""
    manifest = extract_batch(
        plan,
        reader=source_connection("reader", settings),
        lake=lake_for(settings, plan["source"]),
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


def report_source_outage(settings: Settings, reason: str, run_url: str | None = None) -> bool:
    contract = load_contract(settings.contract_path)
    state = state_for(settings, contract.source.name)
    return health.report_outage(
        state,
        reason,
        channel=contract.source.downstream_channel,
        details={"run_url": run_url},
        settings=settings,
    )


class BatchNotCommitted(RuntimeError):
    pass


def collect_committed(settings: Settings, plans: list[dict]) -> list[dict]:
    """After the Glue jobs: every runnable table must have a batch committed since it was planned."""
    lake = lake_for(settings)
    results, missing = [], []
    for plan in plans:
        if plan.get("skip_reason") or plan.get("error"):
            continue
        manifest = lake.read_manifest(plan["table"], plan["batch_id"])
        if manifest is None or manifest["extracted_at"] < plan["planned_at"]:
            missing.append(plan["table"])
            continue
        results.append(summarise(manifest))
    if missing:
        raise BatchNotCommitted(
            f"the Glue jobs reported success but no batch was committed for {', '.join(missing)} "
            f"(batch {plans[0]['batch_id']})"
        )
    return results
