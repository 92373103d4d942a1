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
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from retail_platform.settings import Settings

log = logging.getLogger(__name__)

AUDIT_SCHEMA = "dbt_test__audit"  # where dbt stores each test's failing rows (store_failures)
SNAPSHOTS_KEPT = 3  # the newest snapshots stay on disk: a query that opened an older one can finish


class NoPublishedWarehouse(FileNotFoundError):
    pass


@dataclass(frozen=True)
class FailedTest:
    name: str
    failing_rows: int


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


def start_build(settings: Settings) -> Path:
    """Prepare the build file: forget the failing rows of the previous build's tests."""
    path = build_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    if settings.dbt_target == "local":
        with _connect_like_dbt(path) as conn:
            conn.execute(f"drop schema if exists {AUDIT_SCHEMA} cascade")
    return path


def _test_names(settings: Settings) -> dict[str, str]:
    """dbt stores a test's failing rows under its alias (hashed when the name is long): alias -> name."""
    import json

    from retail_platform.warehouse.dbt_runner import manifest_path

    try:
        nodes = json.loads(manifest_path(settings).read_text())["nodes"].values()
    except (FileNotFoundError, KeyError, ValueError):
        return {}
    return {n["alias"]: n["name"] for n in nodes if n.get("resource_type") == "test" and n.get("alias")}


def failed_tests(settings: Settings) -> list[FailedTest]:
    """The tests of the last build that found rows (dbt stores each test's failing rows)."""
    if settings.dbt_target != "local":
        return []
    path = build_path(settings)
    if not path.exists():
        return []
    names = _test_names(settings)
    with _connect_like_dbt(path) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "select table_name from information_schema.tables where table_schema = ? order by 1",
                [AUDIT_SCHEMA],
            ).fetchall()
        ]
        out = []
        for name in tables:
            rows = conn.execute(f'select count(*) from {AUDIT_SCHEMA}."{name}"').fetchone()[0]
            if rows:
                out.append(FailedTest(names.get(name, name), int(rows)))
    return out


def publish_build(settings: Settings, build_id: str | None = None) -> Path:
    """Make the passed build what readers see; returns the new snapshot's path."""
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
    _switch_link(settings.duckdb_path, snapshot)
    _prune(settings, keep=snapshot)
    log.info("published warehouse build %s: %s -> %s", build_id, settings.duckdb_path, snapshot)
    return snapshot


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
