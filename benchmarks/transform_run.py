"""The main command's transform step against one plain `dbt build` of the project, on the same data.

    ./platform python benchmarks/transform_run.py [--preset classic] [--runs 2]

In a state folder of its own: the sandbox's MariaDB seeded with the preset, one extraction into the
lake, Airflow's metadata database and pools, the compiled manifest. Then, alternately:

* `dbt build` of every model and test, as a process (what a developer runs by hand), over the lake's
  sources registered once beforehand;
* `airflow dags test transform_warehouse` as `./platform run` runs it (one build task: the lake's
  sources, freshness, `dbt build` and its audit under the build lock; then publish, export, spikes),
  timed from the command's start to its end.

The medians are printed as a table; the goal is the transform within 2x of the plain build.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


PREPARE = """
import sys
from datetime import UTC, datetime, timedelta
from retail_platform.extract.runner import plan_run, run_local
from retail_platform.sandbox.seed import seed_source, source_is_seeded
from retail_platform.settings import Settings
from retail_platform.warehouse.dbt_runner import ensure_manifest
from retail_platform.warehouse.transform import prepare_build

settings = Settings.from_env()
if not source_is_seeded(settings):
    seed_source(preset=sys.argv[1], replace=True, settings=settings)
end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
for plan in plan_run(settings, "classicmodels", end - timedelta(hours=1), end):
    run_local(settings, plan)
ensure_manifest(settings)
prepare_build(settings)  # the lake's sources in the build file: what a plain `dbt build` reads
"""


def prepare(preset: str, log: Path) -> None:
    """Seed, extract, compile, register: in a process of its own (DuckDB's lock is a process's)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    timed([sys.executable, "-c", PREPARE, preset], dict(os.environ), log)


def timed(command: list[str], env: dict, log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed: see {log}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="classic")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--state-dir", default=str(ROOT / ".state" / "bench-transform"))
    args = parser.parse_args()
    state = Path(args.state_dir).resolve()
    os.environ["RETAIL_STATE_DIR"] = str(state)
    from retail_platform.sandbox import launcher
    from retail_platform.sandbox.airflow_setup import airflow_env, prepare_airflow
    from retail_platform.settings import Settings
    from retail_platform.warehouse.dbt_runner import dbt_env, dbt_paths

    os.environ.update(launcher.start(only={"mariadb"}))
    try:
        prepare(args.preset, state / "logs" / "prepare.log")
        settings = Settings.from_env()
        env = airflow_env(settings)
        prepare_airflow(settings, env)
        logs = state / "logs"
        dbt = [str(Path(sys.executable).parent / "dbt"), "build", *dbt_paths(settings, compiling=False)]
        times: dict[str, list[float]] = {"dbt build (process)": []}
        for run in range(args.runs):
            times["dbt build (process)"].append(
                timed(dbt, os.environ | dbt_env(settings), logs / "dbt-build.log")
            )
            date = (datetime.now(UTC) + timedelta(minutes=run)).replace(microsecond=0).isoformat()
            command = [sys.executable, "-m", "airflow", "dags", "test", "transform_warehouse", date]
            seconds = timed(command, env, logs / "transform.log")
            times.setdefault("airflow dags test transform_warehouse (one build task)", []).append(seconds)
            print(
                f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()),
                file=sys.stderr,
            )
    finally:
        launcher.stop()
    base = statistics.median(times["dbt build (process)"])
    print("\n| step | median (s) | runs | against the plain build |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        print(
            f"| {name} | {statistics.median(values):.1f} | {len(values)} | {statistics.median(values) / base:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
