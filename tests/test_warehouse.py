"""The dbt layer on real DuckDB over a real lake: marts, training table, quality, freshness, portability."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pendulum
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from portability import redshift_problems

from retail_platform.contract.model import load_contract, parse_contract
from retail_platform.extract.local_engine import extract_batch
from retail_platform.extract.plan import plan_extraction
from retail_platform.lake.batches import RawLake
from retail_platform.lake.storage import LakeStorage
from retail_platform.settings import Settings
from retail_platform.source.introspect import read_live_schema
from retail_platform.warehouse.dbt_runner import DbtCommandFailed, run_dbt, target_dir
from retail_platform.warehouse.dbt_sources import render_sources, sources_in_step
from retail_platform.warehouse.export import TRAINING_COLUMNS, export_training_table, read_latest_export
from retail_platform.warehouse.snapshots import build_path, read_only
from retail_platform.warehouse.transform import build_and_publish

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = load_contract(ROOT / "include" / "contracts" / "classicmodels.yml")
DBT = str(Path(sys.executable).parent / "dbt")


# The training table's definition written independently, on the source (MySQL), for comparison.
TRAINING_JOIN = (
    "SELECT r.customerNumber, c.city, c.state, c.postalCode, c.country, c.creditLimit, r.productCode, "
    "p.productLine, p.productScale, p.quantityInStock, p.buyPrice, p.MSRP, r.productRating FROM ratings r "
    "JOIN customers c USING (customerNumber) JOIN products p USING (productCode)"
)


def build_warehouse(tmp: Path, reader, monkeypatch) -> Settings:
    """Extract the source into a fresh lake and build every dbt model and test on it."""
    lake_dir = tmp / "the shop's lake"  # a quote and a space: paths reach SQL as escaped literals
    monkeypatch.setenv("RETAIL_LAKE_URI", str(lake_dir))
    monkeypatch.setenv("RETAIL_DUCKDB_PATH", str(tmp / "warehouse.duckdb"))
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    lake = RawLake(LakeStorage.from_uri(str(lake_dir)), "classicmodels")
    for plan in plan_extraction(
        CONTRACT, read_live_schema(reader), interval_start=end - timedelta(hours=1), interval_end=end
    ):
        extract_batch(plan, reader=reader, lake=lake)
    settings = Settings.from_env()
    build_and_publish(settings)
    return settings


def query(settings: Settings, sql: str):
    """What readers see: the published build."""
    with read_only(settings) as conn:
        cursor = conn.execute(sql)
        return [d[0] for d in cursor.description], cursor.fetchall()


@pytest.fixture(scope="module")
def modern_warehouse(reader, seed_scratch, tmp_path_factory):
    db = seed_scratch("wh_modern")
    with pytest.MonkeyPatch.context() as mp:
        settings = build_warehouse(tmp_path_factory.mktemp("modern"), reader.with_database(db.database), mp)
        yield settings, db


def test_dbt_sources_are_generated_from_the_contract():
    assert sources_in_step(CONTRACT, ROOT / "dbt"), "run `retail contract dbt-sources`"
    changed = CONTRACT.model_dump(mode="json")
    changed["tables"]["orders"]["columns"].append(
        {"name": "channel", "type": "varchar(20)", "nullable": True}
    )
    rendered = render_sources(parse_contract(changed))
    assert "name: channel" in rendered and not sources_in_step(parse_contract(changed), ROOT / "dbt")


def test_marts_and_training_table_on_the_modern_schema(sql, reader, modern_warehouse):
    settings, db = modern_warehouse
    source = reader.with_database(db.database)
    lines = sql.query(source, "SELECT COUNT(*) FROM orderdetails")[0][0]
    assert query(settings, "select count(*) from analytics.fct_order_lines")[1][0][0] == lines
    columns, rows = query(settings, "select * from ml.ratings_ml_training")
    assert columns == TRAINING_COLUMNS  # the fixed interface, names and order
    # The whole table, field by field, against the same join made independently on the source.
    expected = sql.query(source, TRAINING_JOIN)
    assert sorted(map(tuple, rows)) == sorted(map(tuple, expected))
    assert len(rows) == sql.query(source, "SELECT COUNT(*) FROM ratings")[0][0]
    hourly = query(
        settings,
        "select bool_and(has_order_time), count(distinct extract(hour from order_hour)) "
        "from analytics.fct_hourly_demand",
    )[1][0]
    assert hourly[0] is True and hourly[1] > 12, "the modern schema gives an hourly grain"
    ranks = [
        r[0]
        for r in query(settings, "select popularity_rank from analytics.fct_popular_products_7d order by 1")[
            1
        ]
    ]
    assert ranks == list(range(1, len(ranks) + 1)) and ranks
    totals = query(settings, "select sum(order_total) from analytics.fct_orders")[1][0][0]
    assert totals == sql.query(source, "SELECT SUM(quantityOrdered * priceEach) FROM orderdetails")[0][0]


def test_data_tests_catch_an_order_mart_that_disagrees_with_staging(modern_warehouse):
    settings, _ = modern_warehouse
    with duckdb.connect(str(build_path(settings))) as conn:
        conn.execute(
            "update analytics.fct_orders set order_total = order_total - 1 "
            "where order_number = (select min(order_number) from analytics.fct_orders)"
        )
    try:
        with pytest.raises(DbtCommandFailed, match=r"assert_order_totals_equal_sum_of_lines: Got 1 result"):
            run_dbt(["test", "--select", "assert_order_totals_equal_sum_of_lines"], settings)
    finally:
        run_dbt(["run", "--select", "fct_orders"], settings)
    run_dbt(["test", "--select", "assert_order_totals_equal_sum_of_lines"], settings)


def test_the_unmodified_schema_degrades_to_a_daily_grain(sql, reader, seed_scratch, tmp_path, monkeypatch):
    db = seed_scratch("x_original", variant="original")
    settings = build_warehouse(tmp_path, reader.with_database(db.database), monkeypatch)
    grain = query(
        settings,
        "select bool_or(has_order_time), count(distinct extract(hour from order_hour)) "
        "from analytics.fct_hourly_demand",
    )[1][0]
    assert grain == (False, 1), "only dates: every row at midnight, flagged as daily"
    assert query(settings, "select count(*) from analytics.fct_demand_spikes")[1][0][0] == 0
    source = reader.with_database(db.database)
    assert sorted(map(tuple, query(settings, "select * from ml.ratings_ml_training")[1])) == sorted(
        map(tuple, sql.query(source, TRAINING_JOIN))
    )


def test_training_export_is_atomic_and_keeps_the_interface(modern_warehouse):
    settings, _ = modern_warehouse
    summary = export_training_table(settings)
    manifest, table = read_latest_export(settings)
    assert manifest["build_id"] == summary["build_id"] and manifest["row_count"] == table.num_rows
    assert table.column_names == TRAINING_COLUMNS
    assert str(table.schema.field("creditLimit").type) == "decimal128(10, 2)"
    second = export_training_table(settings)
    assert second["build_id"] != summary["build_id"]
    assert read_latest_export(settings)[0]["build_id"] == second["build_id"]


def test_freshness_announces_sources_older_than_an_hour(modern_warehouse, tmp_path, monkeypatch):
    from retail_platform.alerts import read_alerts
    from retail_platform.warehouse.freshness import check_freshness

    settings, _ = modern_warehouse
    # Age one table's only batch by two hours, as if extraction had stopped then.
    lake = RawLake(LakeStorage.from_uri(settings.lake_uri), "classicmodels")
    manifest = lake.committed_batches("offices")[0]
    path = f"{lake.batch_dir('offices', manifest['batch_id'])}/{manifest['files'][0]['path']}"
    table = pq.read_table(path)
    old = pa.array([datetime.now(UTC) - timedelta(hours=2)] * table.num_rows, pa.timestamp("us", tz="UTC"))
    pq.write_table(
        table.set_column(table.schema.get_field_index("_extracted_at"), "_extracted_at", old), path
    )
    monkeypatch.setenv("RETAIL_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    report = check_freshness(Settings.from_env())
    assert report["stale"] == ["classicmodels.offices"]
    assert report["sources"]["classicmodels.orders"]["status"] == "pass"
    (alert,) = read_alerts(Settings.from_env())
    assert alert["kind"] == "source_freshness" and "classicmodels.offices" in alert["text"]


def test_models_compile_to_redshift_sql(tmp_path):
    """No Redshift cluster here: compile every model for the prod target and parse it as Redshift SQL."""
    env = {
        "DBT_TARGET": "prod",
        "RETAIL_LAKE_URI": "s3://retail-lake/lake",
        "REDSHIFT_HOST": "127.0.0.1",
        "REDSHIFT_PORT": "1",
    }
    import os

    result = subprocess.run(
        [
            DBT,
            "--no-populate-cache",
            "compile",
            "--target",
            "prod",
            "--no-introspect",
            "--target-path",
            str(tmp_path),
            "--project-dir",
            str(ROOT / "dbt"),
            "--profiles-dir",
            str(ROOT / "dbt"),
        ],
        env=os.environ | env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    compiled = sorted((tmp_path / "compiled" / "retail").rglob("*.sql"))
    nodes = json.loads((tmp_path / "manifest.json").read_text())["nodes"].values()
    models = [
        tmp_path / "compiled" / "retail" / n["original_file_path"]
        for n in nodes
        if n["resource_type"] == "model"
    ]
    model_files = {p.stem for p in (ROOT / "dbt" / "models").rglob("*.sql")}
    assert {p.stem for p in models} == model_files and all(p in compiled for p in models), (
        "every model compiled"
    )
    for path in compiled:
        text = path.read_text()
        assert "read_parquet" not in text, path
        # Analyses hold external DDL (CREATE EXTERNAL SCHEMA) that no sqlglot grammar reads.
        problems = redshift_problems(text, allow_commands=path not in models)
        assert not problems, f"{path.name}: Redshift would refuse {problems}"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    staging = [n for n in manifest["nodes"].values() if n["name"].startswith("stg_")]
    assert staging and all(n["config"].get("bind") is False for n in staging), "late-binding views"
    spectrum = (tmp_path / "compiled" / "retail" / "analyses" / "redshift_spectrum_sources.sql").read_text()
    assert spectrum.count("create external table lake_raw.") == len(CONTRACT.tables)
    assert "location 's3://retail-lake/lake/raw/classicmodels/orders/_committed.manifest'" in spectrum
    unload = (
        tmp_path / "compiled" / "retail" / "analyses" / "redshift_unload_training_table.sql"
    ).read_text()
    assert 'as "customerNumber"' in unload and "format as parquet manifest verbose" in unload
    # Write-audit-publish on Redshift: models build in __wap schemas, published by renames in one transaction.
    analytics = next(n for n in manifest["nodes"].values() if n["name"] == "fct_orders")
    assert analytics["schema"] == "analytics__wap"
    publish = (tmp_path / "compiled" / "retail" / "analyses" / "redshift_publish_warehouse.sql").read_text()
    statements = [s.strip() for s in publish.split(";") if s.strip() and not s.strip().startswith("--")]
    assert statements[0] == "begin" and statements[-1] == "commit"
    assert "alter schema analytics__wap rename to analytics" in statements
    assert "drop schema analytics__old cascade" in statements


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("select arg_max(a, b) from t", "function arg_max()"),
        ("select approx_quantile(a, 0.5) from t", "function approx_quantile()"),
        ("select regexp_extract(a, 'x') from t", "function regexp_extract()"),
        ("select array_agg(a) from t group by b", "function array_agg()"),
        ("select string_agg(a, ',') from t", "function string_agg()"),
        ("select strftime(a, '%Y') from t", "function strftime()"),
        ("select struct_pack(a := 1)", "function struct_pack()"),
        ("select cast(a as hugeint) from t", "type INT128"),
        ("select cast(a as uuid) from t", "type UUID"),
        ("select a::integer from t", "DuckDB's :: cast"),
        ("select bogus_fn(a) from t", "function bogus_fn() unknown to sqlglot's Redshift dialect"),
        ("create external schema x from data catalog database 'y'", "a statement sqlglot cannot read"),
    ],
)
def test_the_redshift_check_refuses_what_redshift_would(sql, problem):
    assert any(p.startswith(problem) for p in redshift_problems(sql)), redshift_problems(sql)


def test_the_redshift_check_passes_portable_sql():
    portable = (
        "select date_trunc('hour', a), datediff(hour, a, b), listagg(c, ',') within group (order by c), "
        "cast(d as decimal(10, 2)), bool_and(e), median(f), row_number() over (order by a) from t group by a, b"
    )
    assert redshift_problems(portable) == []


def test_docs_generate_and_serve(modern_warehouse):
    settings, _ = modern_warehouse
    run_dbt(["docs", "generate"], settings)
    target = target_dir(settings)
    catalog = json.loads((target / "catalog.json").read_text())
    assert "model.retail.fct_demand_spikes" in catalog["nodes"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            DBT,
            "docs",
            "serve",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--no-browser",
            "--project-dir",
            str(ROOT / "dbt"),
            "--profiles-dir",
            str(ROOT / "dbt"),
            "--target-path",
            str(target),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as response:
                    assert response.status == 200 and b"dbt" in response.read()
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("dbt docs serve did not answer")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_transform_dag_builds_and_publishes_its_assets(seeded_lake_for_dag, airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = DagBag(dag_folder=str(ROOT / "dags" / "transform_warehouse.py")).get_dag("transform_warehouse")
    # One dbt build task: the run's Airflow cost does not grow with the number of models.
    assert set(dag.task_ids) == {
        "build_warehouse",
        "publish_warehouse",
        "export_training_table",
        "announce_demand_spikes",
    }
    run = dag.test(logical_date=pendulum.now("UTC"))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and set(states.values()) == {"success"}, states
    # The per-model view: every model and test of the build, from dbt's run_results.json, in XCom.
    results = xcom(run, "build_warehouse")
    assert results["passed"] and results["nodes"]["model.retail.fct_demand_spikes"]["status"] == "success"
    assert results["counts"]["pass"] > 10 and not results["failed"]
    with create_session() as session:
        uris = {
            uri
            for (uri,) in session.execute(
                select(AssetModel.uri)
                .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
                .where(AssetEvent.source_run_id == run.run_id)
            )
        }
    assert uris == {"retail://lake/ml/ratings_ml_training", "retail://warehouse/marts/analytics"}
    manifest, table = read_latest_export(Settings.from_env())
    assert table.num_rows == manifest["row_count"] > 0


def xcom(run, task_id: str, key: str = "return_value"):
    """What a task of this run left in XCom."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(
            select(XComModel.value).where(
                XComModel.run_id == run.run_id, XComModel.task_id == task_id, XComModel.key == key
            )
        )
    return json.loads(value) if isinstance(value, str) else value


@pytest.fixture
def seeded_lake_for_dag(mariadb, tmp_path, monkeypatch, dbt_manifest):
    """The DAG reads the test instance's `classicmodels` through the settings, like in production."""
    from retail_platform.sandbox.seed import seed_source

    seed_source(preset="classic", replace=True)
    monkeypatch.setenv("RETAIL_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("RETAIL_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    settings = Settings.from_env()
    from retail_platform.extract.runner import plan_run, run_local

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for plan in plan_run(settings, "classicmodels", end - timedelta(hours=1), end):
        run_local(settings, plan)
    return settings
