"""Every DAG file imports cleanly, fast and without touching a database, and follows the house rules."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAG_FILES = sorted(p for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
EXPECTED_DAGS = {"extract_replica", "transform_warehouse", "watch_source_schema"}


class NetworkUsedAtImport(RuntimeError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt (TCP or unix socket) during DAG parsing is an error."""

    def refuse(*args, **kwargs):
        raise NetworkUsedAtImport("a DAG file opened a connection at import time")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_every_dag_file_imports_without_network_or_database(airflow_db, no_network):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) >= EXPECTED_DAGS
    assert {Path(d.fileloc).name for d in bag.dags.values()} == {p.name for p in DAG_FILES}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_dag_follows_house_rules(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    assert dag.doc_md and len(dag.doc_md) > 100, "every DAG documents itself"
    assert dag.tags, "tags make DAGs findable in the UI"
    assert dag.max_active_runs == 1 or dag_id.startswith("manual_")
    for t in dag.tasks:
        assert t.owner not in ("airflow", None, ""), f"{dag_id}.{t.task_id} has no owner"
        assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
        assert t.execution_timeout is not None, f"{dag_id}.{t.task_id} has no execution timeout"
        assert t.on_failure_callback, f"{dag_id}.{t.task_id} alerts nobody on failure"


def test_a_dag_that_queries_a_database_at_import_fails_the_check(airflow_db, no_network, tmp_path):
    """The guard itself works: a DAG file with a top-level query is an import error."""
    from airflow.dag_processing.dagbag import DagBag

    bad = tmp_path / "bad_dag.py"
    bad.write_text(
        "import MySQLdb\n"
        "MySQLdb.connect(host='127.0.0.1', port=3306, user='x', password='y')\n"
        "from airflow.sdk import dag\n"
        "@dag(dag_id='bad', schedule=None)\n"
        "def bad():\n    pass\n"
        "bad()\n"
    )
    bag = DagBag(dag_folder=str(tmp_path))
    assert bag.import_errors, "a top-level connection must surface as an import error"
