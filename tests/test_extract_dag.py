"""The extraction DAG end to end (dag.test), both engines, and source outages."""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
import pytest

from retail_platform.contract.model import load_contract
from retail_platform.extract import glue_job
from retail_platform.extract.plan import plan_extraction
from retail_platform.lake.batches import lake_for
from retail_platform.settings import Settings
from retail_platform.source.introspect import read_live_schema
from retail_platform.state import state_for

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = load_contract(ROOT / "include" / "contracts" / "classicmodels.yml")
TABLES = sorted(CONTRACT.tables)


@pytest.fixture(scope="module")
def seeded(mariadb):
    """The test instance's own `classicmodels`, which the DAGs read through the read-only user."""
    from retail_platform.sandbox.seed import seed_source

    seed_source(preset="classic", replace=True)
    return mariadb


def _states(dagrun):
    return {
        (ti.task_id, ti.rendered_map_index or ti.map_index): ti.state for ti in dagrun.get_task_instances()
    }


def test_extract_dag_commits_every_table_and_publishes_the_asset(seeded, dagbag, tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIL_LAKE_URI", str(tmp_path / "lake"))
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags" / "extract_replica.py")).get_dag("extract_classicmodels")
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 24, 10, tz="UTC"))
    assert run.state == "success", _states(run)
    assert {m for (t, m), s in _states(run).items() if t == "extract_table" and s == "success"} == set(TABLES)
    lake = lake_for(Settings.from_env(), "classicmodels")
    for table in TABLES:
        (manifest,) = lake.committed_batches(table)
        assert manifest["batch_id"] == "20261124T090000Z_20261124T100000Z"  # the run's data interval
        assert manifest["reconciliation"]["status"] == "ok"
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run.run_id)).all()
        assert len(events) == 1
        assert events[0].extra["committed"]["orderdetails"]["rows"] == 2996


def test_a_breaking_change_pauses_that_table_only_and_the_run_still_publishes(
    seeded, sql, admin, tmp_path, monkeypatch
):
    """payments.amount narrowed (tested downstream): the plan pauses payments, the rest is extracted."""
    monkeypatch.setenv("RETAIL_LAKE_URI", str(tmp_path / "lake"))
    sql.execute(admin, "ALTER TABLE payments MODIFY COLUMN amount DECIMAL(9,2) NOT NULL")
    try:
        from airflow.dag_processing.dagbag import DagBag

        dag = DagBag(dag_folder=str(ROOT / "dags" / "extract_replica.py")).get_dag("extract_classicmodels")
        run = dag.test(logical_date=pendulum.datetime(2026, 11, 24, 12, tz="UTC"))
    finally:
        sql.execute(admin, "ALTER TABLE payments MODIFY COLUMN amount DECIMAL(10,2) NOT NULL")
    states = _states(run)
    assert run.state == "success"
    assert states[("extract_table", "payments")] == "skipped"
    assert states[("publish", -1)] == "success"
    lake = lake_for(Settings.from_env(), "classicmodels")
    assert lake.committed_batches("payments") == [] and lake.committed_batches("orders") != []
    (pause,) = state_for(Settings.from_env(), "classicmodels").pauses().values()
    assert pause["table"] == "payments" and "type narrowed `amount`" in pause["reason"]


def test_both_engines_write_the_same_rows_for_every_table(seeded, reader, tmp_path):
    """The Glue job's PySpark script, run for real in local mode over JDBC, against the local engine."""
    from retail_platform.extract.local_engine import extract_batch
    from retail_platform.lake.batches import RawLake
    from retail_platform.lake.storage import LakeStorage

    end = pendulum.now("UTC").start_of("hour")
    plans = plan_extraction(
        CONTRACT, read_live_schema(reader), interval_start=end.subtract(hours=1), interval_end=end
    )
    local = RawLake(LakeStorage.from_uri(str(tmp_path / "local")), "classicmodels")
    spark = RawLake(LakeStorage.from_uri(str(tmp_path / "spark")), "classicmodels")
    os.environ["GLUE_TEST_SOURCE"] = reader.url()
    for plan in plans:
        extract_batch(plan, reader=reader, lake=local)
        glue_job.main(
            [
                "--plan",
                plan.to_json(),
                "--lake-uri",
                str(tmp_path / "spark"),
                "--source-url-env",
                "GLUE_TEST_SOURCE",
                "--JOB_NAME",
                "retail-extract",
                "--partitions",
                "3",
            ]
        )
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:  # its gateway would otherwise log after pytest closed its streams
        active.stop()
    for table in TABLES:
        a, b = local.read_table(table), spark.read_table(table)
        assert {f.name: f.type for f in a.schema} == {f.name: f.type for f in b.schema}, table
        columns = [c for c in a.column_names if c != "_extracted_at"]
        rows_a = sorted((tuple(r.values()) for r in a.select(columns).to_pylist()), key=repr)
        rows_b = sorted((tuple(r.values()) for r in b.select(columns).to_pylist()), key=repr)
        assert rows_a == rows_b, f"{table}: the engines disagree"
        (manifest,) = spark.committed_batches(table)
        assert manifest["engine"] == "glue" and manifest["reconciliation"]["status"] == "ok"


def test_source_outage_is_announced_once_and_recovery_once(tmp_path, monkeypatch):
    from retail_platform.alerts import read_alerts
    from retail_platform.extract.runner import report_source_outage
    from retail_platform.source import health

    monkeypatch.setenv("RETAIL_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("RETAIL_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    settings = Settings.from_env()
    assert (
        report_source_outage(settings, "classicmodels", 'OperationalError: (2003, "Can\'t connect")') is True
    )
    assert report_source_outage(settings, "classicmodels", "OperationalError: timeout") is False
    state = state_for(settings, "classicmodels")
    assert health.report_healthy(state, channel="#data", settings=settings) is True
    assert health.report_healthy(state, channel="#data", settings=settings) is False
    alerts = read_alerts(settings)
    assert [a["kind"] for a in alerts] == ["source_outage", "source_recovered"]
    assert "data will be stale" in alerts[0]["title"]
