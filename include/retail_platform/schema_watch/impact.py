"""The advance impact check: what a planned change to the replica would break or carry.

Source owners run it a week before a change ships (or put it in their CI):

    retail schema impact --ddl "ALTER TABLE products DROP COLUMN MSRP"
    retail schema impact --ddl-file migration.sql --format markdown --post-to-slack
    retail schema impact --contract proposed_classicmodels.yml

It applies the DDL to the schema the contract accepts, classifies each difference like the watch
does, and reports per table: extraction mode, what the platform would do, owners, and the dbt
models, exposures and training columns that read the changed columns. Exit status 1 when a
change is breaking (CI gates on it).
"""

from __future__ import annotations

import json

from retail_platform.alerts import Alert, context, header, section
from retail_platform.contract.model import Contract
from retail_platform.schema_watch.changes import BREAKING, diff_schemas, shapes_from_contract
from retail_platform.schema_watch.ddl import apply_ddl


def impact_report(
    contract: Contract, lineage: dict | None, *, ddl: str | None = None, proposed: Contract | None = None
) -> dict:
    current = shapes_from_contract(contract, mark_optional=False)
    if ddl is not None:
        after = apply_ddl(ddl, current)
    elif proposed is not None:
        after = shapes_from_contract(proposed, mark_optional=False)
    else:
        raise ValueError("give the planned change as DDL or as a proposed contract")
    changes = diff_schemas(current, after, contract=contract, lineage=lineage)
    tables = {}
    for change in changes:
        table = change.table
        if table in tables:
            continue
        spec = contract.tables.get(table)
        owners = contract.owners_of(table) if spec else contract.source.default_owners
        breaking = any(c.severity == BREAKING for c in changes if c.table == table)
        if spec is None:
            effect = "not extracted (not in the contract); add it to the contract to extract it"
        elif breaking:
            effect = (
                f"extraction of {table} would pause when the change ships, until the contract accepts "
                "it: update the contract and the dbt models together, before the change ships"
            )
        else:
            effect = "carried: extraction and the marts keep working; new columns reach the lake"
        tables[table] = {
            "extraction": None
            if spec is None
            else {
                "mode": spec.extraction.mode.value,
                "cursor": spec.extraction.cursor,
                "critical": spec.critical,
            },
            "owners": owners.model_dump(mode="json"),
            "breaking": breaking,
            "effect": effect,
        }
    return {
        "source": contract.source.name,
        "breaking": any(c.severity == BREAKING for c in changes),
        "changes": [c.to_dict() for c in changes],
        "tables": tables,
        "lineage_available": lineage is not None,
    }


def render(report: dict, fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, default=str)
    bullet, code = ("- ", "`") if fmt == "markdown" else ("  * ", "")
    lines = []
    title = f"Impact of the planned change on {report['source']}: " + (
        "BREAKING" if report["breaking"] else "no breaking change"
    )
    lines.append(f"## {title}" if fmt == "markdown" else title)
    if not report["changes"]:
        lines.append("The change leaves every table the platform reads as it is.")
    for table, info in report["tables"].items():
        lines.append("")
        mode = info["extraction"]
        lines.append(
            (f"### {table}" if fmt == "markdown" else f"{table}")
            + (
                f" (extracted: {mode['mode']}{', cursor ' + mode['cursor'] if mode['cursor'] else ''}"
                f"{', critical' if mode['critical'] else ''})"
                if mode
                else " (not extracted)"
            )
        )
        owners = info["owners"]
        lines.append(
            f"{bullet}owners: {owners['team']} {' '.join(owners.get('slack_mentions') or [])} "
            f"{owners.get('slack_channel') or ''}".rstrip()
        )
        for change in (c for c in report["changes"] if c["table"] == table):
            label = "BREAKING" if change["severity"] == BREAKING else "additive"
            subject = change["column"] or table
            lines.append(
                f"{bullet}{label}: {change['kind'].replace('_', ' ')} {code}{subject}{code}: "
                f"{change['old'] or '-'} -> {change['new'] or '-'} ({change['reason']})"
            )
            impact = change.get("impact") or {}
            for name, values in (
                ("dbt models", impact.get("downstream_models")),
                ("exposures", impact.get("exposures")),
                ("training columns", impact.get("training_columns")),
                ("dbt tests", impact.get("tests")),
            ):
                if values:
                    lines.append(f"    {name}: {', '.join(values)}")
        lines.append(f"{bullet}what the platform would do: {info['effect']}")
    if not report["lineage_available"]:
        lines.append("\n(no dbt lineage available: every dropped or narrowed column was treated as used)")
    return "\n".join(lines)


def report_alert(report: dict) -> Alert:
    title = f"Planned schema change on {report['source']}: " + ("breaking" if report["breaking"] else "safe")
    return Alert(
        kind="schema_impact_check",
        title=title,
        text=render(report, "text"),
        blocks=[
            header(title),
            section(render(report, "markdown")[:2900]),
            context("retail schema impact (advance check)"),
        ],
        details={"breaking": report["breaking"]},
    )
