"""The steps of one warehouse build, shared by the transform DAG's tasks and `retail warehouse build`.

prepare (register the lake's committed batches as sources) -> dbt build (models and tests, in the
build file or the ``__wap`` schemas) -> publish when every test passed, or report what failed and
leave what readers see untouched.
"""

from __future__ import annotations

import logging

from retail_platform.alerts import Alert, deliver, header, section
from retail_platform.settings import Settings
from retail_platform.warehouse.dbt_runner import DbtCommandFailed, run_dbt
from retail_platform.warehouse.snapshots import failed_tests, publish_build, start_build

log = logging.getLogger(__name__)
# DuckDB takes one writer at a time: whatever runs dbt is in this one-slot Airflow pool.
WAREHOUSE_POOL = "warehouse"


def prepare_build(settings: Settings) -> None:
    start_build(settings)
    run_dbt(["run-operation", "register_lake_sources"], settings)


def publish(settings: Settings) -> dict:
    """Switch readers to the build that just passed; returns the marts' summary."""
    from retail_platform.warehouse.marts import marts_summary

    if settings.dbt_target == "local":
        snapshot = publish_build(settings)
        summary = marts_summary(settings)
        summary["snapshot"] = snapshot.name
        return summary
    run_dbt(["run-operation", "publish_warehouse"], settings)
    return marts_summary(settings)


def failed_build_alert(settings: Settings, failed_nodes: list[str]) -> Alert:
    """One message for a failed build: what failed, how many rows each failing test found, and that
    readers still see the last build that passed."""
    tests = failed_tests(settings)
    lines = [f"• test `{t.name}`: {t.failing_rows:,} failing rows" for t in tests]
    tested = {t.name for t in tests}
    lines += [f"• `{node}` failed" for node in failed_nodes if node.rsplit(".", 1)[-1] not in tested]
    title = "Warehouse build failed: the marts keep the last build that passed"
    text = (
        "Nothing of this build was published: dashboards, the training export and the serving side's "
        "popular list still read the last build whose tests all passed.\n"
        + ("\n".join(lines) if lines else "• the build failed before its tests (see the failed tasks)")
    )
    return Alert(
        kind="warehouse_build_failed",
        title=title,
        text=f"{title}\n{text}",
        blocks=[header(title), section(text)],
        details={
            "failed_tests": {t.name: t.failing_rows for t in tests},
            "failed_nodes": failed_nodes,
        },
    )


def report_failed_build(settings: Settings, failed_nodes: list[str]) -> dict:
    alert = failed_build_alert(settings, failed_nodes)
    deliver(alert, settings)
    return alert.details


def build_and_publish(settings: Settings, dbt_args: list[str] | None = None) -> dict:
    """The whole build in one dbt invocation (the CLI and tests); raises after reporting a failure."""
    prepare_build(settings)
    try:
        run_dbt(["build", *(dbt_args or [])], settings)
    except DbtCommandFailed as exc:
        report_failed_build(settings, [str(exc)])
        raise
    return publish(settings)
