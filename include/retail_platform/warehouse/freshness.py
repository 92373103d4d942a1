"""Source freshness before each build: `dbt source freshness` on the lake's `_extracted_at`.

Warn after 30 minutes, error after an hour (the sources YAML). Stale sources are announced to
the downstream channel; the build still runs with the freshest data there is.
"""

from __future__ import annotations

import logging

from retail_platform.alerts import Alert, deliver, header, section
from retail_platform.settings import Settings
from retail_platform.warehouse.dbt_runner import _environment, dbt_env, dbt_paths, release_duckdb

log = logging.getLogger(__name__)


class FreshnessCheckFailed(RuntimeError):
    pass


def check_freshness(settings: Settings | None = None) -> dict:
    from dbt.cli.main import dbtRunner

    settings = settings or Settings.from_env()
    try:
        with _environment(dbt_env(settings)):
            outcome = dbtRunner().invoke(["source", "freshness", *dbt_paths(settings, compiling=False)])
    finally:
        release_duckdb()
    if outcome.exception is not None or outcome.result is None:
        raise FreshnessCheckFailed(f"dbt source freshness could not run: {outcome.exception}")
    report = {}
    for result in outcome.result.results:
        name = f"{result.node.source_name}.{result.node.name}"
        report[name] = {
            "status": str(result.status),
            "max_loaded_at": str(getattr(result, "max_loaded_at", None)),
            "age_s": getattr(result, "age", None),
        }
    stale = {k: v for k, v in report.items() if v["status"] in ("error", "runtime error")}
    warned = {k: v for k, v in report.items() if v["status"] == "warn"}
    if warned:
        log.warning("sources older than 30 minutes: %s", ", ".join(sorted(warned)))
    if stale:
        lines = "\n".join(
            f"• `{name}` last loaded {v['max_loaded_at']} ({(v['age_s'] or 0) / 60:.0f} min ago)"
            for name, v in sorted(stale.items())
        )
        title = f"{len(stale)} warehouse sources are more than an hour old"
        deliver(
            Alert(
                kind="source_freshness",
                title=title,
                text=f"{title}\n{lines}",
                blocks=[header(title), section(lines)],
                details={"stale": stale},
            ),
            settings,
        )
    return {"sources": report, "stale": sorted(stale), "warn": sorted(warned)}
