"""A second source by its contract alone: another database on the same server, a couple of tables.

The test writes no code: it bootstraps the new source's contract from the live replica into a
contracts folder (`retail contract bootstrap --source outlets --connection-id outlets_replica`),
generates its dbt sources (`retail contract dbt-sources`), and then finds its own extraction and
schema-watch DAGs, pool, Asset, lake prefix and warehouse relations, and runs them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pendulum
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE, CONNECTION = "outlets", "outlets_replica"
OUTLETS_DDL = [
    "DROP DATABASE IF EXISTS outlets",
    "CREATE DATABASE outlets CHARACTER SET utf8mb4",
    """CREATE TABLE outlets.stores (
        storeId INT NOT NULL PRIMARY KEY, city VARCHAR(50) NOT NULL, opened DATE NULL,
        floorArea DECIMAL(8,1) NULL)""",
    """CREATE TABLE outlets.visits (
        visitId BIGINT NOT NULL PRIMARY KEY, storeId INT NOT NULL, visitors INT NOT NULL,
        countedAt DATETIME NOT NULL)""",
    "INSERT INTO outlets.stores VALUES (1, 'Nantes', '2019-03-01', 410.5), (2, 'Genève', NULL, 120.0)",
    """INSERT INTO outlets.visits SELECT seq, 1 + seq % 2, 10 + seq % 7, '2026-11-30 10:00:00' + INTERVAL seq MINUTE
       FROM outlets.seq_1_to_500""",
]


@pytest.fixture
def outlets(mariadb, tmp_path, monkeypatch):
    """The new database, a project folder with a copy of the dbt project, and a contracts folder
    holding the classicmodels contract; the new source's connection handed over as its contract
    will name it."""
    conn = mariadb.root_connect()
    try:
        with conn.cursor() as cur:
            for statement in OUTLETS_DDL:
                cur.execute(statement)
        conn.commit()
    finally:
        conn.close()
    mariadb.grant_reader("outlets")
    project = tmp_path / "project"
    shutil.copytree(ROOT / "dbt", project / "dbt", ignore=shutil.ignore_patterns("target", "logs"))
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    shutil.copy(ROOT / "include" / "contracts" / "classicmodels.yml", contracts)
    reader = mariadb.connection("reader")
    for name, value in {
        "RETAIL_PROJECT_DIR": str(project),
        "RETAIL_CONTRACTS_DIR": str(contracts),
        "RETAIL_STATE_DIR": str(tmp_path / "state"),
        "RETAIL_LAKE_URI": str(tmp_path / "lake"),
        "RETAIL_DUCKDB_PATH": str(tmp_path / "warehouse" / "retail.duckdb"),
        "RETAIL_ALERTS_FILE": str(tmp_path / "alerts.jsonl"),
        f"AIRFLOW_CONN_{CONNECTION.upper()}": reader.with_database("outlets").url(),
    }.items():
        monkeypatch.setenv(name, value)
    yield contracts
    conn = mariadb.root_connect()
    try:
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS outlets")
    finally:
        conn.close()


def test_a_second_source_gets_its_own_pipeline_from_its_contract_alone(outlets, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from retail_platform import cli
    from retail_platform.lake.batches import lake_for
    from retail_platform.sandbox.airflow_setup import pools
    from retail_platform.settings import Settings
    from retail_platform.sources import names_for
    from retail_platform.state import state_for
    from retail_platform.warehouse.dbt_runner import ensure_manifest
    from retail_platform.warehouse.snapshots import build_path
    from retail_platform.warehouse.transform import prepare_build

    # The operator's two commands: a contract from the live replica, then its dbt sources.
    argv = ["contract", "bootstrap", "--source", SOURCE, "--connection-id", CONNECTION]
    assert cli.main(argv) == 0
    assert cli.main(["contract", "dbt-sources", "--source", SOURCE]) == 0
    settings = Settings.from_env()
    names = names_for(settings, SOURCE)
    assert (names.pool, names.lake_prefix, names.asset_uri) == (
        "outlets_replica",
        "raw/outlets",
        "retail://lake/raw/outlets",
    )
    assert pools(settings) == {"classicmodels_replica": 2, "outlets_replica": 2, "warehouse": 1}
    ensure_manifest(settings)  # the deployment's `retail warehouse prepare`, now with both sources

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    extract, watch = bag.get_dag("extract_outlets"), bag.get_dag("watch_outlets_schema")
    assert (
        extract
        and watch
        and bag.get_dag("extract_classicmodels")
        and bag.get_dag("watch_classicmodels_schema")
    )
    assert extract.get_task("extract_table").pool == "outlets_replica"
    assert [a.uri for a in extract.get_task("publish").outlets] == ["retail://lake/raw/outlets"]
    transform = bag.get_dag("transform_warehouse").timetable.asset_condition
    assert {asset.uri for asset in transform.objects} == {
        "retail://lake/raw/classicmodels",
        "retail://lake/raw/outlets",
    }, "the warehouse rebuilds when either source publishes"

    run = extract.test(logical_date=pendulum.datetime(2026, 11, 30, 12, tz="UTC"))
    assert run.state == "success"
    lake = lake_for(settings, SOURCE)
    assert lake.table_dir("visits").endswith("/raw/outlets/visits")
    assert [m["row_count"] for m in lake.visible_manifests("visits")] == [500]
    assert [m["mode"] for m in lake.visible_manifests("stores")] == ["full"]
    run = watch.test(logical_date=pendulum.datetime(2026, 11, 30, 12, tz="UTC"))
    assert run.state == "success"
    assert set(state_for(settings, SOURCE).get("schema", "latest.json")["tables"]) == {"stores", "visits"}

    # Its warehouse relations, registered beside classicmodels' by the unchanged macro.
    prepare_build(settings)
    with duckdb.connect(str(build_path(settings))) as conn:
        rows = conn.execute("select count(*), max(countedAt) from lake_raw.outlets__visits").fetchone()
        cities = conn.execute("select city from lake_raw.outlets__stores order by 1").fetchall()
        assert conn.execute("select count(*) from lake_raw.classicmodels__orders").fetchone()[0] == 0
    assert rows[0] == 500 and str(rows[1]) == "2026-11-30 18:20:00"
    assert cities == [("Genève",), ("Nantes",)]
