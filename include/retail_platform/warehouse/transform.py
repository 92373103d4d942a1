"""The steps of one warehouse build, shared by the transform DAG's tasks and `retail warehouse build`.

Under the build lock (one build at a time, ``build_lock``): prepare (register the lake's committed
batches as sources) -> source freshness -> ``dbt build`` (models and tests, in the build file or the
``__wap`` schemas) -> audit: dbt's own ``run_results.json`` says what passed, what failed and how
many rows each failing test found -> stage the passed build. Then publish switches readers to it.
A build that did not pass raises ``BuildFailed`` carrying its one alert, and readers keep the last
build that passed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from retail_platform.alerts import Alert, deliver, header, scrub, section
from retail_platform.errors import ReportedFailure, StorageUnusable, unhealable_storage_cause
from retail_platform.settings import Settings
from retail_platform.warehouse.build_lock import TaskTry, build_lock
from retail_platform.warehouse.dbt_runner import invoke_dbt, run_dbt, run_results_path
from retail_platform.warehouse.settings import WarehouseSettings
from retail_platform.warehouse.snapshots import new_build_id, stage_build, start_build, switch_to

log = logging.getLogger(__name__)
# DuckDB takes one writer at a time: the build task is in this one-slot Airflow pool (the build lock
# holds it for builds that Airflow does not schedule).
WAREHOUSE_POOL = "warehouse"
FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})


@dataclass(frozen=True)
class NodeResult:
    """One node of the build as dbt recorded it in run_results.json."""

    unique_id: str
    status: str
    failures: int | None = None  # a test's failing rows
    message: str | None = None
    seconds: float = 0.0

    @property
    def resource_type(self) -> str:
        return self.unique_id.split(".")[0]

    @property
    def name(self) -> str:
        return self.unique_id.split(".")[2]

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


@dataclass
class BuildReport:
    build_id: str
    nodes: list[NodeResult] = field(default_factory=list)
    error: str | None = None  # dbt could not run at all
    stale_sources: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.failed]

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failed and bool(self.nodes)

    def summary(self) -> dict:
        """For XCom and the UI: every node's outcome (the per-model view), and the totals."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.status] = counts.get(node.status, 0) + 1
        return {
            "build_id": self.build_id,
            "passed": self.passed,
            "counts": counts,
            "error": self.error,
            "stale_sources": self.stale_sources,
            "failed": [asdict(n) for n in self.failed],
            "nodes": {
                n.unique_id: {"status": n.status, "failures": n.failures, "seconds": round(n.seconds, 2)}
                for n in self.nodes
            },
        }

    def table(self) -> str:
        """The per-model view as a text table for the task log."""
        rows = [f"{'node':<60} {'status':<8} {'rows':>6} {'s':>6}"]
        for n in sorted(self.nodes, key=lambda n: (not n.failed, n.unique_id)):
            rows.append(f"{n.unique_id[:60]:<60} {n.status:<8} {n.failures or '':>6} {n.seconds:>6.2f}")
        return "\n".join(rows)


class BuildFailed(ReportedFailure):
    """The build ran and something in it failed: one alert names every failed node."""

    def __init__(self, report: BuildReport, alert: Alert):
        failed = ", ".join(f"{n.name} ({n.failures or n.status})" for n in report.failed)
        super().__init__(f"warehouse build failed, nothing published: {failed or report.error}", alert)
        self.report = report


class DbtDidNotRun(RuntimeError):
    """dbt could not run the build at all (no connection to the warehouse, say): an outage, retried."""


def read_run_results(path: Path) -> list[NodeResult]:
    results = json.loads(path.read_text())["results"]
    return [
        NodeResult(
            unique_id=r["unique_id"],
            status=str(r["status"]),
            failures=r.get("failures"),
            message=r.get("message"),
            seconds=float(r.get("execution_time") or 0.0),
        )
        for r in results
    ]


def prepare_build(settings: Settings, *, wait_s: float = 0.0) -> None:
    start_build(settings, wait_s=wait_s)
    run_dbt(["run-operation", "register_lake_sources"], settings)


def run_build(settings: Settings, dbt_args: list[str] | None = None) -> BuildReport:
    """``dbt build`` in the prepared build; what happened is read from dbt's run_results.json."""
    results = run_results_path(settings)
    results.unlink(missing_ok=True)  # a file left by an earlier command must not be read as this one's
    outcome = invoke_dbt(["build", *(dbt_args or [])], settings)
    report = BuildReport(build_id=new_build_id())
    if results.exists():
        report.nodes = read_run_results(results)
    if outcome.exception is not None:
        report.error = scrub(f"{type(outcome.exception).__name__}: {outcome.exception}")
    elif not outcome.success and not report.failed:
        report.error = "dbt build failed without a failed node (see the dbt log)"
    return report


def build_locked(settings: Settings, dbt_args: list[str] | None = None, *, wait_s: float) -> BuildReport:
    """Prepare, check freshness, build and audit; stages a passed build. Call with the lock held."""
    from retail_platform.warehouse.freshness import check_freshness

    prepare_build(settings, wait_s=wait_s)
    freshness = check_freshness(settings)
    report = run_build(settings, dbt_args)
    report.stale_sources = freshness.get("stale", [])
    log.info("dbt build %s:\n%s", "passed" if report.passed else "FAILED", report.table())
    if report.error is not None and not report.nodes:
        raise DbtDidNotRun(f"dbt build could not run: {report.error}")
    if not report.passed:
        raise BuildFailed(report, failed_build_alert(report))
    if settings.dbt_target == "local":
        stage_build(settings, report.build_id)
    return report


def build(
    settings: Settings, *, holder: str, dbt_args: list[str] | None = None, task_try: TaskTry | None = None
) -> BuildReport:
    """One audited build under the build lock (the transform DAG's build task)."""
    wait = WarehouseSettings.from_env().lock_wait_s
    lock = build_lock(settings, holder=holder, wait_s=wait, task_try=task_try)
    with storage_faults_named(settings), lock:
        return build_locked(settings, dbt_args, wait_s=wait)


@contextlib.contextmanager
def storage_faults_named(settings: Settings):
    """A warehouse folder that cannot be written (read-only, full, forbidden) is a configuration
    problem, told once without retries, not an outage."""
    try:
        yield
    except ReportedFailure:
        raise
    except Exception as exc:
        fault = unhealable_storage_cause(exc)
        if fault is None:
            raise
        where = settings.duckdb_path.parent if settings.dbt_target == "local" else "the warehouse"
        raise StorageUnusable(f"{where} cannot be written ({fault}): nothing was built or published") from exc


def publish_locked(settings: Settings, build_id: str) -> dict:
    """Switch readers to the audited build ``build_id``; returns the marts' summary."""
    from retail_platform.warehouse.marts import marts_summary

    if settings.dbt_target == "local":
        snapshot = switch_to(settings, build_id)
        summary = marts_summary(settings)
        summary["snapshot"] = snapshot.parent.name
        return summary
    run_dbt(["run-operation", "publish_warehouse"], settings)
    return marts_summary(settings)


def publish(settings: Settings, build_id: str, *, holder: str, task_try: TaskTry | None = None) -> dict:
    wait = WarehouseSettings.from_env().lock_wait_s
    with storage_faults_named(settings), build_lock(settings, holder=holder, wait_s=wait, task_try=task_try):
        return publish_locked(settings, build_id)


def failed_build_alert(report: BuildReport) -> Alert:
    """One message for a failed build: each failed model or test, how many rows each failing test
    found (or the error), and that readers still see the last build that passed."""
    lines = []
    for n in report.failed:
        if n.resource_type == "test" and n.failures:
            lines.append(f"• test `{n.name}`: {n.failures:,} failing rows")
        else:
            lines.append(f"• {n.resource_type} `{n.name}` {n.status}: {scrub(n.message or '')[:300]}")
    if report.error:
        lines.append(f"• {report.error[:500]}")
    title = "Warehouse build failed: the marts keep the last build that passed"
    text = (
        "Nothing of this build was published: dashboards, the training export and the serving side's "
        "popular list still read the last build whose tests all passed.\n" + "\n".join(lines)
    )
    return Alert(
        kind="warehouse_build_failed",
        title=title,
        text=f"{title}\n{text}",
        blocks=[header(title), section(text)],
        details={
            "build_id": report.build_id,
            "failed_tests": {n.name: n.failures for n in report.failed if n.resource_type == "test"},
            "failed_nodes": [n.unique_id for n in report.failed],
            "error": report.error,
        },
    )


def build_and_publish(settings: Settings, dbt_args: list[str] | None = None) -> dict:
    """The whole build and its publish under one hold of the lock (the CLI and tests); a failure is
    announced (its one alert) and raised."""
    wait = WarehouseSettings.from_env().lock_wait_s
    holder = f"retail warehouse build (pid {os.getpid()})"
    try:
        with build_lock(settings, holder=holder, wait_s=wait):
            report = build_locked(settings, dbt_args, wait_s=wait)
            return publish_locked(settings, report.build_id)
    except ReportedFailure as failure:
        deliver(failure.alert, settings)
        raise
