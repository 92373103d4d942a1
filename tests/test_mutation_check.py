"""The mutation check (tests/mutants/run.py) cannot rot: every row of its table still applies to the
code and names tests that exist, and a run of one mutation, the append-only count check's, is
caught. The whole check runs for minutes and is the developers' own (see its docstring)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "mutants" / "run.py"


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True)


def test_every_mutation_applies_once_and_names_tests_that_exist():
    done = run_check("--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "STALE" not in done.stdout and "unknown test id" not in done.stdout


def test_the_short_read_mutation_is_caught_by_the_check(state_dir):
    # Its own state folder: the nested test run starts and stops its own private MariaDB.
    done = run_check(
        "--only",
        "append-only-short-read-accepted",
        "--no-baseline",
        "--state-dir",
        str(state_dir.parent / f"{state_dir.name}-mutation-check"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  caught          append-only-short-read-accepted" in done.stdout
    assert "1 of 1 caught" in done.stdout
