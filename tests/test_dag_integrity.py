"""Every DAG file imports cleanly, fast and without touching a database, and follows the house rules.

The import guard sees what a DAG file would really reach: every connection the platform knows
points at a sentinel TCP listener that counts the connections it accepts (MySQLdb and connectorx
open sockets natively, below Python's `socket` module), and Airflow's Variable and Connection
lookups are recorded while the DAG folder is parsed.
"""

from __future__ import annotations

import ast
import re
import socket
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAG_FILES = sorted(p for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
EXPECTED_DAGS = {
    "extract_classicmodels",
    "transform_warehouse",
    "watch_classicmodels_schema",
    "retrain_recommender",
    "compact_lake",
}
# Connection ids anything in the platform looks up.
KNOWN_CONNECTIONS = {
    "classicmodels_replica": "mysql://reader:secret@127.0.0.1:{port}/classicmodels",
    "slack_alerts": "slackwebhook://:T0/B0/secret@127.0.0.1:{port}/services",
    "retail_vectors": "postgresql://retail_vectors:secret@127.0.0.1:{port}/retail",
    "aws_default": '{{"conn_type": "aws", "extra": {{"endpoint_url": "http://127.0.0.1:{port}"}}}}',
}


class Sentinel:
    """A TCP listener that accepts and counts connections, then closes them."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.server.close()


class MetadataLookups:
    def __init__(self):
        self.calls: list[str] = []


@pytest.fixture
def guarded(monkeypatch):
    """Parse under guard: returns (sentinel, lookups) to assert on afterwards."""
    from airflow.sdk import BaseHook, Variable

    sentinel = Sentinel()
    for conn_id, template in KNOWN_CONNECTIONS.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", template.format(port=sentinel.port))
    lookups = MetadataLookups()
    real_variable_get, real_get_connection = Variable.get, BaseHook.get_connection

    def variable_get(key, *args, **kwargs):
        lookups.calls.append(f"Variable.get({key!r})")
        return real_variable_get(key, *args, **kwargs)

    def get_connection(conn_id):
        lookups.calls.append(f"get_connection({conn_id!r})")
        return real_get_connection(conn_id)

    monkeypatch.setattr(Variable, "get", staticmethod(variable_get))
    monkeypatch.setattr(BaseHook, "get_connection", classmethod(lambda cls, conn_id: get_connection(conn_id)))
    yield sentinel, lookups
    sentinel.close()


def parse(folder: Path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(folder))


def test_every_dag_file_imports_fast_without_reaching_a_server_or_the_metadata(airflow_db, guarded):
    sentinel, lookups = guarded
    for path in DAG_FILES:
        started = time.perf_counter()
        bag = parse(path)
        seconds = time.perf_counter() - started
        assert bag.import_errors == {}, bag.import_errors
        assert seconds < 5, f"{path.name} took {seconds:.1f} s to parse: no work at import time"
    bag = parse(ROOT / "dags")
    assert set(bag.dag_ids) >= EXPECTED_DAGS
    assert {Path(d.fileloc).name for d in bag.dags.values()} == {p.name for p in DAG_FILES}
    time.sleep(0.3)  # the sentinel's accept loop polls
    assert sentinel.accepted == 0, "a DAG file opened a connection while being parsed"
    assert lookups.calls == [], f"DAG files read Airflow's metadata at parse time: {lookups.calls}"


def test_the_guard_sees_a_native_database_connection_at_import(airflow_db, guarded, tmp_path):
    """MySQLdb connects from C: a DAG file doing so reaches the sentinel, which counts it."""
    sentinel, _ = guarded
    (tmp_path / "bad_dag.py").write_text(
        "import MySQLdb\n"
        f"try:\n    MySQLdb.connect(host='127.0.0.1', port={sentinel.port}, user='x', password='y', connect_timeout=2)\n"
        "except MySQLdb.OperationalError:\n    pass\n"
        "from airflow.sdk import dag\n"
        "@dag(dag_id='bad', schedule=None)\n"
        "def bad():\n    pass\n"
        "bad()\n"
    )
    parse(tmp_path)
    time.sleep(0.3)
    assert sentinel.accepted == 1


def test_the_guard_sees_a_variable_read_at_import(airflow_db, guarded, tmp_path):
    _, lookups = guarded
    (tmp_path / "bad_dag.py").write_text(
        "from airflow.sdk import Variable, dag\n"
        "try:\n    Variable.get('retail_schedule')\nexcept Exception:\n    pass\n"
        "@dag(dag_id='bad', schedule=None)\n"
        "def bad():\n    pass\n"
        "bad()\n"
    )
    parse(tmp_path)
    assert lookups.calls == ["Variable.get('retail_schedule')"]


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_dag_follows_house_rules(dagbag, dag_id):
    from retail_airflow.dag_defaults import CONFIGURATION_ERRORS_FAIL

    dag = dagbag.get_dag(dag_id)
    assert dag.doc_md and len(dag.doc_md) > 100, "every DAG documents itself"
    assert dag.tags, "tags make DAGs findable in the UI"
    assert dag.max_active_runs == 1 or dag_id.startswith("manual_")
    for t in dag.tasks:
        assert t.owner not in ("airflow", None, ""), f"{dag_id}.{t.task_id} has no owner"
        assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
        assert t.execution_timeout is not None, f"{dag_id}.{t.task_id} has no execution timeout"
        assert t.on_failure_callback, f"{dag_id}.{t.task_id} alerts nobody on failure"
        assert t.retry_policy is CONFIGURATION_ERRORS_FAIL, (
            f"{dag_id}.{t.task_id} retries configuration errors"
        )


# ---------------------------------------------------------------- tests run DAGs as they ship

TESTS = sorted((ROOT / "tests").glob("test_*.py"))
LOWERS_RETRIES = re.compile(r"\.retries\s*[,=]|\bretries\s*=\s*0\b")
REASON = "retries lowered:"


def _lowerings(source: str) -> list[int]:
    """Lines that set a task's retries (assignments, not reads)."""
    lines = source.splitlines()
    return [i for i, line in enumerate(lines) if LOWERS_RETRIES.search(line.split("#")[0])]


def test_a_test_that_lowers_a_dags_retries_says_why():
    unexplained = []
    for path in TESTS:
        if path.name == Path(__file__).name:
            continue
        lines = path.read_text().splitlines()
        for i in _lowerings(path.read_text()):
            around = " ".join(lines[max(0, i - 4) : i + 1])
            if REASON not in around:
                unexplained.append(f"{path.name}:{i + 1}: {lines[i].strip()}")
    assert not unexplained, f"lowered without a '# {REASON} <why>' comment: {unexplained}"


def test_the_guard_sees_a_lowering_without_a_reason():
    assert _lowerings("    for t in dag.tasks:\n        t.retries = 0\n") == [1]
    assert _lowerings("    task.retries, task.retry_delay = 0, timedelta(seconds=1)\n") == [0]
    assert _lowerings("    assert t.retries >= 1\n    n = task.retries + 1\n") == []


def _functions(path: Path) -> dict[str, str]:
    source = path.read_text()
    return {
        node.name: ast.get_source_segment(source, node)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef)
    }


def test_every_dag_runs_in_some_test_with_its_shipped_retry_policy():
    """Each DAG is run (dag.test or `airflow dags test`) by at least one test that does not touch its
    retries: the retry path that production takes is the one tested."""
    shipped = set()
    for path in TESTS:
        functions = _functions(path)
        for name, body in functions.items():
            if not name.startswith("test_"):
                continue
            # The test and the module's helpers it calls (a DAG is often loaded by a helper).
            called = [functions[f] for f in functions if f != name and re.search(rf"\b{f}\(", body)]
            text = "\n".join([body, *called])
            runs = ".test(" in text or "dags test" in text
            if runs and not _lowerings(text):
                shipped |= {dag_id for dag_id in EXPECTED_DAGS if dag_id in text}
    assert shipped == EXPECTED_DAGS, f"never run with the shipped retries: {sorted(EXPECTED_DAGS - shipped)}"


def test_compact_lake_runs_as_it_ships(airflow_db, tmp_path, monkeypatch):
    """The compaction DAG with its shipped retry policy, over a lake with nothing to compact yet."""
    import pendulum
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RETAIL_LAKE_URI", str(tmp_path / "lake"))
    dag = DagBag(dag_folder=str(ROOT / "dags" / "compact_lake.py")).get_dag("compact_lake")
    run = dag.test(logical_date=pendulum.now("UTC"))
    states = {(ti.task_id, ti.map_index): (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert run.state == "success" and {s for s, _ in states.values()} == {"success"}, states
    assert len([t for t, _ in states if t == "compact_table"]) >= 9
