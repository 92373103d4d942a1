"""Every DAG file imports cleanly, fast and without touching a database, and follows the house rules.

The import guard sees what a DAG file would really reach: every connection the platform knows
points at a sentinel TCP listener that counts the connections it accepts (MySQLdb and connectorx
open sockets natively, below Python's `socket` module), and Airflow's Variable and Connection
lookups are recorded while the DAG folder is parsed.
"""

from __future__ import annotations

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


def _reported_by_build_report(dag, task) -> bool:
    """dbt's tasks are reported once for the whole build, by a task that runs after all of them."""
    report = dag.task_dict.get("report_failed_build")
    return (
        task.task_id.startswith("dbt_build.")
        and report is not None
        and report.trigger_rule == "all_done"
        and task.task_id in report.upstream_task_ids
    )


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
        assert t.on_failure_callback or _reported_by_build_report(dag, t), (
            f"{dag_id}.{t.task_id} alerts nobody on failure"
        )
        assert t.retry_policy is CONFIGURATION_ERRORS_FAIL, (
            f"{dag_id}.{t.task_id} retries configuration errors"
        )
