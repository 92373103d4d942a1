"""The mutation check: apply each listed bug to a copy of the tree and run the tests that must catch it.

    ./platform python tests/mutants/run.py                 every mutation (minutes: real servers, DAG runs)
    ./platform python tests/mutants/run.py --only NAME     one (repeat --only for more)
    ./platform python tests/mutants/run.py --list          the table, and whether each row still applies
    ./platform python tests/mutants/run.py --check         --list, failing on a stale row or unknown test id

The work tree is never touched: the tracked and untracked (not ignored) files are copied to a
temporary folder once, and each mutation is written into that copy, tested, then undone. The
tests run there with the copy's code first on the import path and their own state folder
(``--state-dir``, default ``.state/test-mutants``), so they start their own private servers.

Before the mutations, the named tests run once on the unmutated copy: a test that already fails
proves nothing (``baseline failed``); ``--no-baseline`` skips this. A mutation is ``caught`` when
its tests fail, ``SURVIVED`` when they pass, ``no test`` when the row has none yet, ``stale`` when
its original text is not found exactly once. The exit status is 0 only when every selected
mutation is caught. mutmut and cosmic-ray were tried first: both generate their own operators
over whole files and cannot apply a listed bug such as a changed ``trigger_rule``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutations import MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parents[2]
CAUGHT, SURVIVED, NO_TEST, STALE, BASELINE_FAILED, ERROR = (
    "caught",
    "SURVIVED",
    "no test",
    "stale",
    "baseline failed",
    "error",
)
# pytest's exit codes: 1 tests failed, 2 interrupted or a collection error (the mutation broke an
# import), 4 usage error, 5 no tests collected (a node id that no longer exists).
FAILED_CODES = (1, 2)


@dataclass
class Result:
    mutation: Mutation
    status: str
    seconds: float = 0.0
    detail: str = ""


def occurrences(root: Path, m: Mutation) -> int:
    path = root / m.path
    return path.read_text().count(m.original) if path.exists() else 0


def copy_tree(target: Path) -> None:
    """The files git would see (tracked and untracked, not ignored): the work tree as it is now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is listed but absent
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def pytest_env(copy: Path, state_dir: Path) -> dict:
    env = dict(os.environ)
    # The copy's code before the editable install's (a .pth entry naming the work tree).
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "include"), str(copy / "plugins")])
    env["RETAIL_TEST_STATE_DIR"] = str(state_dir)
    env["RETAIL_PROJECT_DIR"] = str(copy)
    # A mutated file may keep its size and mtime second: never run a stale cached bytecode.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_tests(copy: Path, state_dir: Path, tests: tuple[str, ...], log: Path) -> int:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        return subprocess.run(
            command, cwd=copy, env=pytest_env(copy, state_dir), stdout=out, stderr=subprocess.STDOUT
        ).returncode


def check_one(copy: Path, state_dir: Path, m: Mutation, log: Path, baseline: dict | None) -> Result:
    """``baseline``: the unmutated runs' exit codes by test tuple (each tuple runs once), or None."""
    if not m.tests:
        return Result(m, NO_TEST, detail=f"TODO {m.todo}")
    if occurrences(copy, m) != 1:
        return Result(m, STALE, detail=f"original text found {occurrences(copy, m)} times in {m.path}")
    started = time.monotonic()
    if baseline is not None:
        if m.tests not in baseline:
            baseline[m.tests] = run_tests(copy, state_dir, m.tests, log)
        code = baseline[m.tests]
        if code != 0:
            return Result(m, BASELINE_FAILED, time.monotonic() - started, f"pytest exit {code} unmutated")
    path = copy / m.path
    original = path.read_text()
    path.write_text(original.replace(m.original, m.mutated, 1))
    try:
        code = run_tests(copy, state_dir, m.tests, log)
    finally:
        path.write_text(original)
    seconds = time.monotonic() - started
    if code in FAILED_CODES:
        return Result(m, CAUGHT, seconds)
    if code == 0:
        return Result(m, SURVIVED, seconds, "every named test passed with the mutation")
    return Result(m, ERROR, seconds, f"pytest exit {code}: a test id that does not exist?")


def collect_errors(mutations: list[Mutation]) -> list[str]:
    """Node ids in the table that pytest cannot collect in the work tree."""
    ids = sorted({t for m in mutations for t in m.tests})
    files = sorted({t.split("::")[0] for t in ids if (ROOT / t.split("::")[0]).exists()})
    if not files:
        return ids
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 5):
        print(done.stdout[-3000:])  # a file that does not collect: its error, not only "unknown"
    found = done.stdout.split()
    return [t for t in ids if not any(f == t or f.startswith(f"{t}[") for f in found)]


def list_table(mutations: list[Mutation], check: bool) -> int:
    problems = 0
    for m in mutations:
        n = occurrences(ROOT, m)
        state = "applies" if n == 1 else f"STALE ({n} matches)"
        tests = ", ".join(t.split("::")[-1] for t in m.tests) or f"TODO {m.todo}"
        print(f"{m.name:<46} {m.path:<46} {state}\n    {m.why}\n    tests: {tests}")
        problems += n != 1
    if check:
        missing = collect_errors(mutations)
        for node in missing:
            print(f"unknown test id: {node}")
        problems += len(missing)
    return 1 if check and problems else 0


def select(names: list[str] | None) -> list[Mutation]:
    if not names:
        return list(MUTATIONS)
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown mutation(s): {', '.join(unknown)}; see --list")
    return [known[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutation (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the table and whether each row applies")
    parser.add_argument("--check", action="store_true", help="--list, exit 1 on a stale row or unknown test")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the unmutated run of each row's tests"
    )
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".state" / "test-mutants")
    parser.add_argument("--keep", action="store_true", help="keep the copy of the tree (its path is printed)")
    args = parser.parse_args(argv)
    mutations = select(args.only)
    if args.list or args.check:
        return list_table(mutations, args.check)

    started, stamp = time.monotonic(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    copy = Path(tempfile.mkdtemp(prefix="retail-mutants-"))
    log = copy.parent / f"{copy.name}.log"
    try:
        copy_tree(copy)
        print(f"mutation check {stamp}: {len(mutations)} mutation(s); pytest output in {log}", flush=True)
        results, baseline = [], None if args.no_baseline else {}
        for m in mutations:
            result = check_one(copy, args.state_dir, m, log, baseline)
            results.append(result)
            note = f"  ({result.detail})" if result.detail else ""
            print(f"  {result.status:<15} {m.name:<46} {result.seconds:6.0f} s{note}", flush=True)
    finally:
        if args.keep:
            print(f"copy kept in {copy}")
        else:
            shutil.rmtree(copy, ignore_errors=True)
    caught = sum(r.status == CAUGHT for r in results)
    minutes = (time.monotonic() - started) / 60
    print(f"{caught} of {len(results)} caught in {minutes:.1f} min ({stamp})")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
