"""Slack messages (Block Kit) for schema changes, one per changed table, to its owners."""

from __future__ import annotations

from retail_platform.alerts import Alert, context, deliver, header, section
from retail_platform.contract.model import Contract
from retail_platform.schema_watch.changes import BREAKING
from retail_platform.settings import Settings
from retail_platform.sources import names_for
from retail_platform.state import state_for


def _mentions(owners) -> str:
    parts = list(owners.slack_mentions)
    if owners.slack_channel:
        parts.append(owners.slack_channel)
    return " ".join(parts) + f" ({owners.team})"


def _impact_lines(changes: list[dict]) -> str:
    models, exposures, training, tests = set(), set(), set(), set()
    for change in changes:
        impact = change.get("impact") or {}
        models.update(impact.get("downstream_models", []))
        exposures.update(impact.get("exposures", []))
        training.update(impact.get("training_columns", []))
        tests.update(impact.get("tests", []))
    if not (models or exposures or training or tests):
        return "nothing downstream reads the changed columns"
    lines = []
    if models:
        lines.append("*dbt models:* " + ", ".join(f"`{m}`" for m in sorted(models)))
    if exposures:
        lines.append("*Exposures:* " + ", ".join(sorted(exposures)))
    if training:
        lines.append(
            "*Training columns* (`ratings_ml_training`): " + ", ".join(f"`{c}`" for c in sorted(training))
        )
    if tests:
        lines.append(f"*dbt tests:* {len(tests)}")
    return "\n".join(lines)


def change_set_alert(
    contract: Contract,
    table: str,
    changes: list[dict],
    *,
    replica: str,
    seen_at: str,
    action: str,
    run_url: str | None,
    reminder: bool = False,
) -> Alert:
    breaking = any(c["severity"] == BREAKING for c in changes)
    owners = contract.owners_of(table) if table in contract.tables else contract.source.default_owners
    title = (
        f"{'Reminder: ' if reminder else ''}{'Breaking' if breaking else 'Additive'} schema change on "
        f"{contract.source.name}.{table}"
    )
    change_lines = "\n".join(
        f"• {'🔴' if c['severity'] == BREAKING else '🟢'} *{c['kind'].replace('_', ' ')}* "
        f"`{c['column'] or table}`: {c['old'] or '—'} → {c['new'] or '—'}  _{c['reason']}_"
        for c in changes
    )
    blocks = [
        header(title),
        section(f"*Source:* `{replica}` · *Table:* `{table}` · *Seen:* {seen_at}"),
        section(f"*Changes:*\n{change_lines}"),
        section(f"*Owners:* {_mentions(owners)}"),
        section(f"*Downstream impact:*\n{_impact_lines(changes)}"),
        section(f"*What the platform did:* {action}"),
    ]
    if run_url:
        blocks.append(context(f"<{run_url}|Airflow run of the schema watch of {contract.source.name}>"))
    text = f"{title}\n{change_lines}\nOwners: {_mentions(owners)}\nAction: {action}"
    return Alert(
        kind="schema_change",
        title=title,
        text=text,
        blocks=blocks,
        channel=owners.slack_channel,
        details={"table": table, "changes": changes},
    )


def action_for(table: str, changes: list[dict], report: dict) -> str:
    if table in report["paused"] or (
        table in report["still_paused"] and any(c["severity"] == BREAKING for c in changes)
    ):
        return (
            f"paused extraction of `{table}`: the lake and the marts keep their last consistent data. It "
            f"resumes when the contract accepts the change (`retail contract bootstrap --merge --table "
            f"{table}`, reviewed and merged) or the change is reverted."
        )
    if any(c["kind"] == "column_added" for c in changes):
        return "propagated: new columns flow into the lake (raw batches); staging is unchanged until a model uses them."
    return "propagated: extraction goes on; the change is recorded in the schema history."


def resumed_alert(contract: Contract, table: str) -> Alert:
    owners = contract.owners_of(table) if table in contract.tables else contract.source.default_owners
    title = f"Extraction of {contract.source.name}.{table} resumed"
    text = "No breaking difference between the contract and the replica is left."
    return Alert(
        kind="schema_resumed",
        title=title,
        text=f"{title}\n{text}",
        blocks=[header(title), section(text), section(f"*Owners:* {_mentions(owners)}")],
        channel=owners.slack_channel,
        details={"table": table},
    )


def announce_resumed(contract: Contract, settings: Settings) -> list[str]:
    """Tell the owners of every resumed table not told yet; each is forgotten once delivered, so a
    failed delivery (which raises) is retried by the next attempt and nothing is said twice."""
    from retail_platform.schema_watch.watch import PENDING_RESUMED

    state = state_for(settings, contract.source.name)
    told = []
    for table in sorted(state.get(*PENDING_RESUMED) or {}):
        deliver(resumed_alert(contract, table), settings)
        pending = state.get(*PENDING_RESUMED) or {}
        pending.pop(table, None)
        state.put(pending, *PENDING_RESUMED)
        told.append(table)
    return told


def notify_changes(report: dict, settings: Settings | None = None) -> list[str]:
    """Deliver one message per changed table (and one per resumed table); returns the keys sent.

    What was said is recorded after each message, so a task retried with the same report (after
    a delivery failed half-way) tells only the tables not yet told."""
    from retail_platform.schema_watch.watch import delivered_for, record_announced

    settings = settings or Settings.from_env()
    contract = names_for(settings, report["source"]).load_contract()
    done = delivered_for(settings, report)
    sent: list[str] = []
    record_announced(settings, report, [])  # forget what got resolved
    for bucket, reminder in (("announce", False), ("remind", True)):
        by_table: dict[str, list[dict]] = {}
        for change in report[bucket]:
            by_table.setdefault(change["table"], []).append(change)
        for table, changes in sorted(by_table.items()):
            keys = [c["key"] for c in changes]
            if set(keys) <= done:
                continue
            deliver(
                change_set_alert(
                    contract,
                    table,
                    changes,
                    replica=report["replica"],
                    seen_at=report["seen_at"],
                    action=action_for(table, changes, report),
                    run_url=report["run_url"],
                    reminder=reminder,
                ),
                settings,
            )
            record_announced(settings, report, keys)
            sent += keys
    announce_resumed(contract, settings)
    return sent
