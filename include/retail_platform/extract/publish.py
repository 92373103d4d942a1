"""The end of an extraction run: what was committed, skipped or failed, and whether to publish."""

from __future__ import annotations

from retail_platform.errors import ConsequentialFailure, StorageUnusable
from retail_platform.extract.plan import TablePlan

# The XCom key under which a table's task leaves the storage fault it met (told once, by publish).
STORAGE_FAULT_KEY = "storage_fault"


class CriticalTablesFailed(ConsequentialFailure):
    """Each failed table was announced by its own task: not retried, not announced again."""


def storage_fault_of_the_run(faults: list[dict | None] | None) -> StorageUnusable | None:
    """The tables' storage faults as one configuration problem naming the cause and every table."""
    faults = sorted((f for f in faults or [] if f), key=lambda f: f["table"])
    if not faults:
        return None
    tables = ", ".join(f["table"] for f in faults)
    return StorageUnusable(
        f"the lake cannot be written, so {len(faults)} tables were not extracted ({tables}): "
        f"{faults[0]['error']}; no retry can fix it: make the lake writable (mount, free space, "
        "permissions, bucket) and rerun"
    )


def summarise_run(
    plans: list[dict | TablePlan] | None,
    results: list[dict | None] | None,
    storage_faults: list[dict | None] | None = None,
) -> dict:
    """Summary for the Asset event; raises when a critical table failed (the event is withheld,
    so the warehouse keeps its last consistent state rather than mixing fresh and stale tables), and
    raises one StorageUnusable naming every table the lake refused (their tasks stayed silent)."""
    fault = storage_fault_of_the_run(storage_faults)
    if fault is not None:
        raise fault
    if plans is None:
        raise ConsequentialFailure(
            "no plan for this run (plan_batches failed and was reported): nothing to publish"
        )
    plans = [TablePlan.from_dict(p) for p in plans]
    done = {r["table"]: r for r in results or [] if r}  # skipped or failed tasks give no result
    skipped = {p.table: p.skip_reason for p in plans if p.skip_reason}
    failed = [p for p in plans if p.table not in done and p.table not in skipped]
    summary = {
        "batch_id": plans[0].batch_id if plans else None,
        "committed": {t: {"rows": r["rows"], "mode": r["mode"]} for t, r in sorted(done.items())},
        "skipped": skipped,
        "failed": {p.table: p.error or "extraction failed (see its task log)" for p in failed},
        "new_columns": {t: r["new_columns"] for t, r in done.items() if r.get("new_columns")},
    }
    critical = sorted(p.table for p in failed if p.critical)
    if critical:
        raise CriticalTablesFailed(
            f"critical tables failed: {', '.join(critical)}; the raw lake Asset is not published for this run"
        )
    return summary
