"""Running dbt for the platform: in-process (dbtRunner), with the platform's settings as env vars."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path

from retail_platform.settings import Settings

log = logging.getLogger(__name__)

PARTIAL_PARSE = "partial_parse.msgpack"


class DbtCommandFailed(RuntimeError):
    pass


def dbt_env(settings: Settings) -> dict[str, str]:
    """What profiles.yml and dbt_project.yml read through env_var(). dbt writes the build file,
    never the published snapshot readers open (write-audit-publish, ``snapshots``)."""
    from retail_platform.warehouse.snapshots import build_path

    build = build_path(settings)
    build.parent.mkdir(parents=True, exist_ok=True)
    return {
        "RETAIL_LAKE_URI": settings.lake_uri,
        "RETAIL_DUCKDB_BUILD_PATH": str(build),
        "RETAIL_STATE_DIR": str(settings.state_dir),
        "DBT_TARGET": settings.dbt_target,
        "DBT_PROFILES_DIR": str(settings.dbt_project_dir),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "DO_NOT_TRACK": "1",
    }


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def invoke_dbt(args: list[str], settings: Settings):
    """Invoke dbt in-process and return dbtRunner's result as it is (success or not)."""
    from dbt.cli.main import dbtRunner

    full = [*args, *dbt_paths(settings, compiling=bool({"compile", "parse", "docs"} & set(args)))]
    try:
        with _environment(dbt_env(settings)):
            return dbtRunner().invoke(full)
    finally:
        release_duckdb()


def run_dbt(args: list[str], settings: Settings | None = None):
    """Invoke dbt in-process; raises DbtCommandFailed naming the command when it fails."""
    settings = settings or Settings.from_env()
    result = invoke_dbt(args, settings)
    if not result.success:
        detail = result.exception or _failures(result.result)
        raise DbtCommandFailed(f"dbt {' '.join(args)} failed: {detail}")
    return result.result


def run_results_path(settings: Settings) -> Path:
    """dbt's own record of its last warehouse command (build, run, test): one result per node."""
    return target_dir(settings) / "runs" / "run_results.json"


def release_duckdb() -> None:
    """Close the DuckDB file dbt-duckdb keeps open for the rest of the process (for its next
    invocation): the build's `dbt build` runs as a process of its own and needs the file's lock,
    and a task may run in the same process as the one before it (`airflow dags test`)."""
    module = sys.modules.get("dbt.adapters.duckdb.connections")
    if module is None:  # dbt-duckdb never loaded (the Redshift target)
        return
    manager = module.DuckDBConnectionManager
    environment = manager._ENV
    manager.close_all_connections()
    if environment is not None:
        with contextlib.suppress(Exception):  # already closed
            environment.close()


def _failures(results) -> str:
    failed = []
    for r in getattr(results, "results", None) or []:
        node = getattr(r, "node", None)
        if str(getattr(r, "status", "")) in ("error", "fail", "runtime error"):
            failed.append(f"{getattr(node, 'name', 'operation')}: {getattr(r, 'message', None) or r.status}")
    return "; ".join(failed) or "see the dbt log"


def target_dir(settings: Settings) -> Path:
    """dbt's target folder, under the state folder: each deployment (and each test run) its own."""
    return settings.state_dir / "dbt" / "target"


def dbt_paths(settings: Settings, *, compiling: bool) -> list[str]:
    """Where dbt reads the project and writes its artefacts and logs.

    Commands other than compile/parse/docs write a manifest without compiled SQL: they go to
    ``runs/``, away from the compiled one the schema watch reads its lineage from."""
    project = str(settings.dbt_project_dir)
    target = target_dir(settings) if compiling else target_dir(settings) / "runs"
    return [
        "--project-dir",
        project,
        "--profiles-dir",
        project,
        "--target-path",
        str(target),
        "--log-path",
        str(settings.state_dir / "dbt" / "logs"),
    ]


def manifest_path(settings: Settings) -> Path:
    return target_dir(settings) / "manifest.json"


def manifest_is_stale(settings: Settings) -> bool:
    manifest = manifest_path(settings)
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    project = settings.dbt_project_dir
    inputs = [project / "dbt_project.yml", project / "profiles.yml"]
    for folder in ("models", "macros", "data-tests", "analyses"):
        inputs += [p for p in (project / folder).rglob("*") if p.is_file()]
    return any(p.stat().st_mtime > built for p in inputs if p.exists())


def ensure_manifest(settings: Settings | None = None) -> Path:
    """Precompile the manifest the schema watch reads its lineage from (no dbt work at DAG parse),
    and share its parse with the warehouse commands."""
    settings = settings or Settings.from_env()
    if manifest_is_stale(settings):
        # Compiled (not only parsed): the schema watch's column lineage reads the compiled SQL.
        # No cache, no introspection: it needs no warehouse connection.
        log.info("dbt compile: the manifest is missing or older than the project")
        run_dbt(["--no-populate-cache", "compile", "--no-introspect"], settings)
    _share_partial_parse(settings)
    return manifest_path(settings)


def _share_partial_parse(settings: Settings) -> None:
    """Hand the compile's parse to the commands that run against the warehouse (their own target
    folder), so the first of them does not parse the whole project again. dbt checks the file
    against the project, profile and variables, and parses afresh when anything changed."""
    parsed = target_dir(settings) / PARTIAL_PARSE
    runs = target_dir(settings) / "runs" / PARTIAL_PARSE
    if parsed.exists() and (not runs.exists() or runs.stat().st_mtime < parsed.stat().st_mtime):
        runs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(parsed, runs)
