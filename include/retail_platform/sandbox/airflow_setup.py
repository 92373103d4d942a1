"""Airflow as the sandbox's commands use it (`./platform run` and `./platform up`): the CLI run with
its long output in a log file, the base environment, and the metadata and pools every DAG expects.
Both commands import this; neither imports the other for it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from retail_platform.settings import Settings


class AirflowFailed(RuntimeError):
    """An Airflow command or server of the sandbox's failed; the message ends with its log's tail."""


def airflow_command(args: list[str], log_file: Path, env: dict[str, str], *, append: bool = False) -> float:
    """Run the Airflow CLI; its output goes to ``log_file``, the tail into the error on failure.
    Returns the seconds it took."""
    started = time.perf_counter()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a" if append else "w") as out:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-40:])
        raise AirflowFailed(f"airflow {' '.join(args)} failed (log: {log_file}):\n{tail}")
    return seconds


def airflow_env(settings: Settings) -> dict[str, str]:
    """This process's environment with the project's DAGs and plugins and a home in the state folder
    (values the environment sets win)."""
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(settings.state_dir / "airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(settings.project_dir / "dags"))
    env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(settings.project_dir / "plugins"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("RETAIL_STATE_DIR", str(settings.state_dir))
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def prepare_airflow(settings: Settings, env: dict[str, str]) -> None:
    """The metadata database migrated and the pools set (both idempotent)."""
    logs = settings.state_dir / "logs"
    airflow_command(["db", "migrate"], logs / "airflow-db-migrate.log", env)
    for pool, size in pools(settings).items():
        airflow_command(
            ["pools", "set", pool, str(size), f"retail platform: {pool}"],
            logs / f"airflow-pool-{pool}.log",
            env,
        )


def pools(settings: Settings) -> dict[str, int]:
    """Every source's replica pool (named by its contract) and the warehouse's one-writer pool."""
    from retail_platform.sources import source_names
    from retail_platform.warehouse.transform import WAREHOUSE_POOL

    replicas = {names.pool: settings.replica_pool_slots for names in source_names(settings.contracts_dir)}
    return replicas | {WAREHOUSE_POOL: 1}
