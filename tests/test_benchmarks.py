"""Every script under benchmarks/ runs here at a tiny size: it starts, measures and prints its table,
so a signature change breaks a test, not the README. No figure is asserted (speed goals are the
benchmarks' business, never a test's), only that each one still runs end to end and reports.

Each script runs as the README shows it (its own process, its own state folder under the test's
temporary directory); whatever servers it leaves running there are stopped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

# script -> (tiny arguments, a line its report prints); "{state}" is the script's own state folder.
SMOKE = {
    "extract_throughput.py": (
        [
            "--rows",
            "2000",
            "--repeat",
            "1",
            "--skip-pandas",
            "--methods",
            "mariadb client,platform,connectorx",
        ],
        "| method | rows |",
    ),
    "lake_scale.py": (["--batches", "12", "--rows", "5", "--state-dir", "{state}"], "commit"),
    "recommender.py": (["--preset", "classic", "--state-dir", "{state}"], '"exact_user_to_item"'),
    "score_spikes.py": (
        ["--preset", "classic", "--seed", "42", "--state-dir", "{state}"],
        "| preset | seed | order lines |",
    ),
    "serving.py": (["--handler-only", "--state-dir", "{state}"], "handler"),
    "transform_run.py": (["--preset", "classic", "--runs", "1", "--state-dir", "{state}"], "one build task"),
    "watch_query.py": (["--runs", "2", "--state-dir", "{state}"], "information_schema read over 2 runs"),
    "spike_latency.py": (
        ["--hours", "2", "--interval-min", "60", "--real-seconds", "8", "--state-dir", "{state}"],
        "| extraction interval (clock min) |",
    ),
    "freshness.py": (
        ["--preset", "classic", "--minutes", "1", "--schedule", "*/1 * * * *", "--state-dir", "{state}"],
        '"steady_cycle_s_median"',
    ),
}
SLOW = {
    "recommender.py",
    "score_spikes.py",
    "transform_run.py",
    "freshness.py",
    "spike_latency.py",
}  # a dbt build or Airflow


# A second mode of a script, run on the state its first run left: script -> (arguments, expected).
THEN = {
    "recommender.py": (
        ["--preset", "classic", "--state-dir", "{state}", "--variants", "taste", "favourite_line"],
        "| new with a cart NDCG@10 |",
    ),
}

# Scripts whose smoke test lives beside the tests of what they drive: script -> "file::test".
ELSEWHERE = {"soak.py": "tests/test_platform_service.py::test_soak_benchmark_smoke"}


def test_every_benchmark_script_has_a_smoke_test():
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    missing = scripts - set(SMOKE) - set(ELSEWHERE)
    assert not missing, f"without a smoke test: {sorted(missing)}"
    for script, where in ELSEWHERE.items():
        path, test = where.split("::")
        assert f"def {test}(" in (ROOT / path).read_text(), f"{script}: {where} is gone"


def _environment(state: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}  # its own servers
    return env | {
        "RETAIL_STATE_DIR": str(state),
        "RETAIL_LAKE_URI": str(state / "lake"),
        "RETAIL_DUCKDB_PATH": str(state / "warehouse" / "retail.duckdb"),
        "AIRFLOW_HOME": str(state / "airflow"),
        "PYTHONUNBUFFERED": "1",
    }


STOP_SERVERS = """
from retail_platform.sandbox.kinesis import LocalKinesis
from retail_platform.sandbox.mariadb import LocalMariaDB
from retail_platform.sandbox.postgres import LocalPostgres
for server in (LocalMariaDB, LocalPostgres, LocalKinesis):
    instance = server.from_settings()
    if instance.is_running():
        instance.stop()
"""


def _seed_classic(env: dict) -> None:
    """watch_query reads a seeded source (the state folder score_spikes leaves): seed the classic one."""
    code = "from retail_platform.sandbox.seed import seed_source; seed_source(preset='classic', replace=True)"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=600, capture_output=True)


def _run_benchmark(script: str, arguments: list[str], state: Path, env: dict) -> str:
    """Run ``script`` with ``arguments`` ({state} filled in); its output, once it exited 0."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *(a.format(state=state) for a in arguments)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.mark.parametrize(
    "script",
    [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in sorted(SMOKE)],
)
def test_the_benchmark_starts_measures_and_prints_its_table(script, tmp_path):
    arguments, report = SMOKE[script]
    state = tmp_path / "state"
    env = _environment(state)
    try:
        if script == "watch_query.py":
            _seed_classic(env)
        output = _run_benchmark(script, arguments, state, env)
    finally:
        subprocess.run([sys.executable, "-c", STOP_SERVERS], env=env, timeout=300, capture_output=True)
    assert report in output, output[-4000:]
    if script in THEN:
        arguments, report = THEN[script]
        output = _run_benchmark(script, arguments, state, env)
        assert report in output and "| taste |" in output, output[-4000:]
