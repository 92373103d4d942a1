"""Write-audit-publish for the warehouse: readers see a build only after all of its tests passed.

DuckDB (local): dbt writes and tests in a build file of its own (``build/retail.duckdb`` beside the
published one). Only when the whole build passed is it copied to a new snapshot
(``snapshots/<build id>/retail.duckdb``) and the published path, a symbolic link, is switched to it
with one atomic rename. Readers (the BI tool,
the training export, the serving side's popular list) open the published path read-only: they see
the previous build or the new one, never a half-built or failed one, and a running build never locks
them out. A failed or killed build leaves the published snapshot exactly as it was.

Redshift (prod): dbt builds into ``<schema>__wap`` schemas; publishing renames them over the live
schemas in one transaction (the ``publish_warehouse`` macro).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from retail_platform.errors import ConsequentialFailure, ReportedFailure
from retail_platform.settings import Settings

log = logging.getLogger(__name__)

AUDIT_SCHEMA = "dbt_test__audit"  # where dbt stores each test's failing rows (store_failures)
SNAPSHOTS_KEPT = 3  # the newest snapshots stay on disk: a query that opened an older one can finish


class NoPublishedWarehouse(FileNotFoundError):
    pass


class NoStagedBuild(ConsequentialFailure):
    """Publish without an audited build: the build did not pass (and said so)."""


def build_path(settings: Settings) -> Path:
    return settings.duckdb_path.parent / "build" / settings.duckdb_path.name


def snapshots_dir(settings: Settings) -> Path:
    return settings.duckdb_path.parent / "snapshots"


def new_build_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"


def _connect_like_dbt(path: Path):
    """A read-write connection with dbt-duckdb's (default) configuration: DuckDB refuses a second
    connection to the same file with another configuration in one process (``dag.test``)."""
    import duckdb

    return duckdb.connect(str(path))


class WarehouseLocked(ReportedFailure):
    """Another process holds DuckDB's own lock on the build file (not a build: builds take the build
    lock first) for the whole wait: the build fails naming it, without retries."""


def start_build(settings: Settings, *, wait_s: float = 0.0) -> Path:
    """Prepare the build file: forget the failing rows of the previous build's tests. Waits up to
    ``wait_s`` for a process that holds DuckDB's lock on the file."""
    path = build_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    if settings.dbt_target == "local":
        with _open_build_file(path, wait_s) as conn:
            conn.execute(f"drop schema if exists {AUDIT_SCHEMA} cascade")
    return path


def _open_build_file(path: Path, wait_s: float):
    import duckdb

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _connect_like_dbt(path)
        except duckdb.IOException as exc:
            if "lock" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise WarehouseLocked(
                    _locked_message(path, exc, wait_s), _locked_alert(path, exc, wait_s)
                ) from exc
            time.sleep(0.5)


def _locked_message(path: Path, exc: Exception, wait_s: float) -> str:
    return (
        f"the warehouse build file {path} is locked by another process after {wait_s:.0f} s of waiting "
        f"({str(exc).split(' See also')[0]})"
    )


def _locked_alert(path: Path, exc: Exception, wait_s: float):
    from retail_platform.alerts import Alert

    text = (
        f"{_locked_message(path, exc, wait_s)}. Nothing was built or published; readers keep the last "
        "build that passed. Close whatever holds the build file read-write (never open it: readers open "
        "the published snapshot); the next run builds everything this one would have."
    )
    return Alert.message(
        "warehouse_locked",
        "Warehouse build did not start: its build file is locked",
        text,
        details={"build_file": str(path), "error": str(exc).split(" See also")[0]},
    )


def stage_build(settings: Settings, build_id: str | None = None) -> Path:
    """Copy the build that just passed to its own snapshot folder, not yet seen by readers (the link
    still points at the previous one); returns the snapshot's path."""
    build_id = build_id or new_build_id()
    source = build_path(settings)
    with _connect_like_dbt(source) as conn:
        conn.execute("checkpoint")  # everything in the file itself, nothing left in its WAL
    # snapshots/<build id>/retail.duckdb: the file keeps one name, so a reader's catalog name (and
    # Superset's schema names, "retail.analytics") stay the same from build to build.
    target_dir = snapshots_dir(settings)
    snapshot = target_dir / build_id / settings.duckdb_path.name
    partial = target_dir / f".{build_id}.{uuid.uuid4().hex[:8]}.partial"
    partial.mkdir(parents=True)
    shutil.copyfile(source, partial / snapshot.name)
    with open(partial / snapshot.name, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, snapshot.parent)
    return snapshot


def switch_to(settings: Settings, build_id: str) -> Path:
    """Make a staged build what readers see (one atomic rename of the link); never goes back to a
    build older than the one published. Returns the snapshot readers see afterwards."""
    snapshot = snapshots_dir(settings) / build_id / settings.duckdb_path.name
    if not snapshot.exists():
        raise NoStagedBuild(f"no staged warehouse build {build_id} at {snapshot}: nothing to publish")
    link = settings.duckdb_path
    if link.is_symlink() and link.exists() and published_build_id(settings) > build_id:
        log.warning("a newer build than %s is already published: left as it is", build_id)
        return published_snapshot(settings)
    _switch_link(settings.duckdb_path, snapshot)
    _prune(settings, keep=snapshot)
    log.info("published warehouse build %s: %s -> %s", build_id, settings.duckdb_path, snapshot)
    return snapshot


def publish_build(settings: Settings, build_id: str | None = None) -> Path:
    """Stage the build file and make it what readers see at once; returns the new snapshot's path."""
    snapshot = stage_build(settings, build_id)
    return switch_to(settings, snapshot.parent.name)


def _switch_link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically: a reader resolves the old target or the new one."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() and not link.is_symlink():
        # A warehouse file from before write-audit-publish: kept beside the snapshots, out of the way.
        os.replace(link, target.parent.parent / f"legacy-{link.name}")
    tmp = link.parent / f".{link.name}.{uuid.uuid4().hex[:8]}.link"
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)
    fd = os.open(link.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(settings: Settings, keep: Path) -> None:
    builds = sorted(p for p in snapshots_dir(settings).iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in builds[:-SNAPSHOTS_KEPT]:
        if old != keep.parent:
            shutil.rmtree(old, ignore_errors=True)


def published_snapshot(settings: Settings) -> Path:
    """The snapshot readers see now; raises NoPublishedWarehouse before the first passing build."""
    link = settings.duckdb_path
    if not link.exists():
        raise NoPublishedWarehouse(
            f"no warehouse build has passed its tests yet ({link} does not exist): run the transform"
        )
    return link.resolve()


def published_build_id(settings: Settings) -> str:
    """The id of the build readers see now."""
    return published_snapshot(settings).parent.name


def read_only(settings: Settings):
    """A read-only DuckDB connection to the published snapshot (never the build file)."""
    import duckdb

    return duckdb.connect(str(published_snapshot(settings)), read_only=True)
