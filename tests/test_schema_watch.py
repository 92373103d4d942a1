"""The schema watch against the real MariaDB: detection, classification, Slack over real HTTP,
announcements, pause and accept with the extraction DAG, outages, and the advance impact check."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pendulum
import pytest
import yaml

from retail_platform.contract.model import load_contract, parse_contract
from retail_platform.schema_watch.changes import ADDITIVE, BREAKING
from retail_platform.schema_watch.ddl import DDLError
from retail_platform.schema_watch.impact import impact_report, render
from retail_platform.schema_watch.watch import evaluate_drift, lineage_for, run_watch
from retail_platform.settings import Settings
from retail_platform.source.introspect import read_live_schema

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_PATH = ROOT / "include" / "contracts" / "classicmodels.yml"
CONTRACT = load_contract(CONTRACT_PATH)


@pytest.fixture(scope="module")
def lineage(dbt_manifest):
    return lineage_for(Settings.from_env())


# (DDL, expected kind, column, severity) — each applied to a fresh copy of the classic source.
CASES = [
    ("ALTER TABLE products ADD COLUMN color VARCHAR(20) NULL", "column_added", "color", ADDITIVE),
    ("ALTER TABLE products DROP COLUMN productDescription", "column_dropped", "productDescription", ADDITIVE),
    ("ALTER TABLE products DROP COLUMN MSRP", "column_dropped", "MSRP", BREAKING),
    (
        "ALTER TABLE customers CHANGE COLUMN country country_name VARCHAR(50) NOT NULL",
        "column_renamed",
        "country",
        BREAKING,
    ),
    (
        "ALTER TABLE products MODIFY COLUMN productName VARCHAR(100) NOT NULL",
        "type_widened",
        "productName",
        ADDITIVE,
    ),
    (
        "ALTER TABLE products MODIFY COLUMN buyPrice DECIMAL(8,2) NOT NULL",
        "type_narrowed",
        "buyPrice",
        BREAKING,
    ),
    ("ALTER TABLE orders MODIFY COLUMN comments VARCHAR(200) NULL", "type_narrowed", "comments", ADDITIVE),
    ("ALTER TABLE payments MODIFY COLUMN amount VARCHAR(20) NOT NULL", "type_changed", "amount", BREAKING),
    ("ALTER TABLE customers MODIFY COLUMN city VARCHAR(50) NULL", "nullability_relaxed", "city", ADDITIVE),
    # An incremental cursor must stay a time: an integer is orderable but not a timestamp.
    ("ALTER TABLE orders MODIFY COLUMN updated_at BIGINT NOT NULL", "cursor_lost", "updated_at", BREAKING),
    (
        "ALTER TABLE orders DROP PRIMARY KEY, ADD PRIMARY KEY (orderNumber, customerNumber)",
        "primary_key_changed",
        None,
        BREAKING,
    ),
    (
        "CREATE TABLE wishlist (customerNumber INT NOT NULL, productCode VARCHAR(15) NOT NULL, "
        "PRIMARY KEY (customerNumber, productCode))",
        "table_added",
        None,
        ADDITIVE,
    ),
    ("DROP TABLE ratings", "table_dropped", None, BREAKING),
    ("ALTER TABLE customers ADD COLUMN location POINT NULL", "column_added", "location", BREAKING),
]


@pytest.mark.parametrize(
    ("ddl", "kind", "column", "severity"), CASES, ids=[c[1] + ":" + (c[2] or "") for c in CASES]
)
def test_real_ddl_is_detected_and_classified(sql, reader, seed_scratch, lineage, ddl, kind, column, severity):
    db = seed_scratch("watch", fresh=True)
    sql.execute(db, "DROP TABLE IF EXISTS wishlist")  # the generator rebuilds only classicmodels' tables
    assert evaluate_drift(CONTRACT, read_live_schema(reader.with_database(db.database)), lineage) == []
    sql.execute(db, "SET foreign_key_checks = 0", ddl)
    (change,) = evaluate_drift(CONTRACT, read_live_schema(reader.with_database(db.database)), lineage)
    assert (change.kind, change.column, change.severity) == (kind, column, severity), change.reason
    if kind not in ("table_added", "column_added"):
        # Every change to something that exists says what downstream reads it.
        assert change.impact and change.impact["known"], kind
    if kind in ("nullability_relaxed", "primary_key_changed"):
        assert change.impact["downstream_models"], f"{kind}: the staging model reads {column or 'the key'}"


def test_cursor_loss_is_breaking_unless_the_cursor_is_optional(sql, reader, seed_scratch, lineage):
    from retail_platform.schema_watch.changes import diff_schemas, shapes_from_live

    db = seed_scratch("watch", fresh=True)
    before = read_live_schema(reader.with_database(db.database))
    sql.execute(db, "ALTER TABLE orders DROP COLUMN updated_at")
    live = read_live_schema(reader.with_database(db.database))
    # Optional in the contract: its absence is no drift (the unmodified schema has no updated_at)...
    assert evaluate_drift(CONTRACT, live, lineage) == []
    # ...and against the last schema seen it is reported, as additive: extraction falls back.
    (relaxed,) = diff_schemas(
        shapes_from_live(before), shapes_from_live(live), contract=CONTRACT, lineage=lineage
    )
    assert (
        relaxed.kind == "column_dropped"
        and relaxed.severity == ADDITIVE
        and "full snapshots" in relaxed.reason
    )
    strict_doc = yaml.safe_load(CONTRACT_PATH.read_text())
    for column in strict_doc["tables"]["orders"]["columns"]:
        column.pop("optional", None)
    (lost,) = evaluate_drift(parse_contract(strict_doc), live, lineage)
    assert (lost.kind, lost.severity) == ("cursor_lost", BREAKING)


def test_impact_of_a_column_the_training_table_reads_and_of_one_nothing_reads(lineage):
    used = impact_report(CONTRACT, lineage, ddl="ALTER TABLE products DROP COLUMN MSRP")
    (change,) = used["changes"]
    assert change["severity"] == BREAKING and used["breaking"]
    assert change["impact"]["training_columns"] == ["MSRP"]
    assert change["impact"]["downstream_models"] == ["dim_products", "ratings_ml_training"]
    assert change["impact"]["exposures"] == ["marketing_demand_dashboard", "product_recommender"]
    assert set(change["impact"]["tests"]) == {
        "assert_prices_positive",
        "not_null_ratings_ml_training_v1_MSRP",
    }
    assert "would pause" in used["tables"]["products"]["effect"]

    unused = impact_report(CONTRACT, lineage, ddl="ALTER TABLE offices DROP COLUMN phone")
    (change,) = unused["changes"]
    assert change["severity"] == ADDITIVE and not unused["breaking"]
    assert change["impact"]["downstream_models"] == [] and change["impact"]["exposures"] == []
    assert change["impact"]["training_columns"] == [] and change["impact"]["tests"] == []
    assert "nothing downstream reads it" in render(unused)


@pytest.mark.parametrize(
    "ddl,message",
    [
        (
            "ALTER TABLE products DROP COLUMNN MSRP",
            r"statement 1 \(ALTER TABLE products DROP COLUMNN MSRP\): cannot read",
        ),
        ("ALTER TABLE products DROP COLUMN nope", r"column products\.nope does not exist"),
        ("ALTER TABLE nowhere ADD COLUMN x INT", r"table nowhere is not in the source contract"),
        ("SELECT 1", r"only ALTER/CREATE/DROP/RENAME TABLE statements"),
        ("   ", r"no DDL statement given"),
    ],
)
def test_malformed_ddl_gets_a_clear_error(lineage, ddl, message):
    with pytest.raises(DDLError, match=message):
        impact_report(CONTRACT, lineage, ddl=ddl)


@pytest.fixture
def slack(monkeypatch):
    from faultkit import SlackReceiver

    receiver = SlackReceiver()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_ALERTS", json.dumps({"conn_type": "slackwebhook", "password": receiver.url})
    )
    yield receiver
    receiver.server.shutdown()


@pytest.fixture
def watched_source(mariadb, sql, admin, tmp_path, monkeypatch, dbt_manifest):
    """The test instance's `classicmodels` (what the DAGs read), freshly seeded, with its own lake."""
    from retail_platform.sandbox.seed import seed_source

    seed_source(preset="classic", replace=True)
    monkeypatch.setenv("RETAIL_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("RETAIL_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    yield admin
    sql.execute(admin, "DROP TABLE IF EXISTS wishlist")
    seed_source(preset="classic", replace=True)


def _watch_and_notify(settings, now=None):
    from retail_platform.schema_watch.notify import notify_changes

    report = run_watch(
        settings, "classicmodels", run_url="http://airflow.example/dags/watch_source_schema/runs/r1", now=now
    )
    notify_changes(report, settings)
    return report


def test_slack_message_per_change_set_once_with_reminders(watched_source, sql, slack, capfd):
    settings = Settings.from_env()
    assert _watch_and_notify(settings)["drift"] == [] and slack.messages == []
    sql.execute(
        watched_source,
        "SET foreign_key_checks = 0",
        "ALTER TABLE products DROP COLUMN MSRP",
        "ALTER TABLE orders ADD COLUMN channel VARCHAR(20) NULL",
    )
    report = _watch_and_notify(settings)
    assert report["paused"].keys() == {"products"}
    assert [m["path"] for m in slack.messages] == ["/services/T0SECRET/B0SECRET/webhooksecret"] * 2
    from retail_platform.schema_watch.notify import notify_changes

    assert notify_changes(report, settings) == [] and len(slack.messages) == 2, (
        "a retried notify task (same report) tells no table twice"
    )
    by_title = {m["body"]["blocks"][0]["text"]["text"]: m["body"]["blocks"] for m in slack.messages}
    blocks = by_title["Breaking schema change on classicmodels.products"]
    texts = "\n".join(
        b.get("text", {}).get("text", "") if b["type"] != "context" else b["elements"][0]["text"]
        for b in blocks
    )
    assert "`products`" in texts and "*column dropped* `MSRP`: decimal(10,2) → —" in texts
    assert "@catalog-oncall #catalog-eng" in texts  # the owners from the contract
    assert "`ratings_ml_training`" in texts and "product_recommender" in texts and "`MSRP`" in texts
    assert "paused extraction of `products`" in texts
    assert "<http://airflow.example/dags/watch_source_schema/runs/r1|Airflow run" in texts
    assert "Additive schema change on classicmodels.orders" in by_title
    assert "propagated" in json.dumps(by_title["Additive schema change on classicmodels.orders"])

    _watch_and_notify(settings)
    assert len(slack.messages) == 2, "the same change is announced once"
    _watch_and_notify(settings, now=datetime.now(UTC) + timedelta(hours=25))
    assert len(slack.messages) == 3, "one reminder, for the breaking change only (past the 24 h setting)"
    assert slack.messages[-1]["body"]["blocks"][0]["text"]["text"].startswith("Reminder: Breaking")
    out, err = capfd.readouterr()
    assert "webhooksecret" not in out + err, "the webhook URL never reaches the logs"


def test_history_of_schemas_is_kept(watched_source, sql):
    from retail_platform.state import state_for

    settings = Settings.from_env()
    run_watch(settings, "classicmodels")
    sql.execute(watched_source, "ALTER TABLE offices ADD COLUMN fax VARCHAR(50) NULL")
    run_watch(settings, "classicmodels", now=datetime.now(UTC) + timedelta(minutes=10))
    state = state_for(settings, "classicmodels")
    history = state.list("schema", "history")
    assert len(history) == 2
    newest = state.get("schema", "history", history[-1])
    assert "fax" in [c["name"] for c in newest["tables"]["offices"]["columns"]]


def test_pause_and_accept_end_to_end_with_the_extraction_dag(
    watched_source, sql, tmp_path, monkeypatch, airflow_db
):
    from airflow.dag_processing.dagbag import DagBag

    from retail_platform.alerts import read_alerts
    from retail_platform.lake.batches import lake_for
    from retail_platform.state import state_for

    settings = Settings.from_env()
    sql.execute(watched_source, "SET foreign_key_checks = 0", "ALTER TABLE products DROP COLUMN MSRP")
    watch = DagBag(dag_folder=str(ROOT / "dags" / "watch_source_schema.py")).get_dag(
        "watch_classicmodels_schema"
    )
    run = watch.test(logical_date=pendulum.now("UTC"))
    assert run.state == "success"
    assert set(state_for(settings, "classicmodels").pauses()) == {"products"}
    assert any(a["kind"] == "schema_change" and "products" in a["title"] for a in read_alerts(settings))

    extract = DagBag(dag_folder=str(ROOT / "dags" / "extract_replica.py")).get_dag("extract_classicmodels")
    run = extract.test(logical_date=pendulum.datetime(2026, 11, 24, 10, tz="UTC"))
    states = {
        ti.rendered_map_index: ti.state for ti in run.get_task_instances() if ti.task_id == "extract_table"
    }
    assert run.state == "success" and states["products"] == "skipped" and states["orders"] == "success"
    lake = lake_for(settings, "classicmodels")
    assert lake.committed_batches("products") == [] and lake.committed_batches("orders")

    # The operator accepts the change: the contract no longer expects MSRP (reviewed and merged).
    accepted = yaml.safe_load(CONTRACT_PATH.read_text())
    accepted["tables"]["products"]["columns"] = [
        c for c in accepted["tables"]["products"]["columns"] if c["name"] != "MSRP"
    ]
    folder = tmp_path / "contracts"
    folder.mkdir()
    (folder / "classicmodels.yml").write_text(yaml.safe_dump(accepted))
    monkeypatch.setenv("RETAIL_CONTRACTS_DIR", str(folder))
    run = (
        DagBag(dag_folder=str(ROOT / "dags" / "extract_replica.py"))
        .get_dag("extract_classicmodels")
        .test(logical_date=pendulum.datetime(2026, 11, 24, 11, tz="UTC"))
    )
    states = {
        ti.rendered_map_index: ti.state for ti in run.get_task_instances() if ti.task_id == "extract_table"
    }
    assert states["products"] == "success"
    assert state_for(settings, "classicmodels").pauses() == {}
    # The extraction resumed the table before the watch ran again: it tells the owners itself.
    (resumed,) = [a for a in read_alerts(settings) if a["kind"] == "schema_resumed"]
    assert resumed["title"] == "Extraction of classicmodels.products resumed"
    assert resumed["channel"] == "#catalog-eng"
    (batch,) = lake.committed_batches("products")
    assert "MSRP" not in [c["name"] for c in batch["columns"]]


def test_outage_announced_once_and_recovery_once(watched_source, mariadb, monkeypatch):
    """The replica answers through a proxy, then goes away (the proxy refuses), then comes back."""
    from faultkit import TcpProxy

    from retail_platform.alerts import read_alerts
    from retail_platform.schema_watch.watch import SourceUnavailable

    reader = mariadb.connection("reader")
    proxy = TcpProxy(reader.host, reader.port)
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLASSICMODELS_REPLICA", reader.url().replace(f":{reader.port}/", f":{proxy.port}/")
    )
    settings = Settings.from_env()
    try:
        run_watch(settings, "classicmodels")
        proxy.down()
        for _ in range(2):
            with pytest.raises(SourceUnavailable, match="did not answer"):
                run_watch(settings, "classicmodels")
        proxy.up()
        run_watch(settings, "classicmodels")
        run_watch(settings, "classicmodels")
    finally:
        proxy.close()
    kinds = [a["kind"] for a in read_alerts(settings)]
    assert kinds == ["source_outage", "source_recovered"]


def test_watch_dag_detects_a_change_on_its_next_run(watched_source, sql, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from retail_platform.alerts import read_alerts

    dag = DagBag(dag_folder=str(ROOT / "dags" / "watch_source_schema.py")).get_dag(
        "watch_classicmodels_schema"
    )
    assert dag.timetable.expression == "*/10 * * * *"
    first = dag.test(logical_date=pendulum.now("UTC"))
    assert first.state == "success" and read_alerts(Settings.from_env()) == []
    sql.execute(watched_source, "ALTER TABLE orders ADD COLUMN channel VARCHAR(20) NULL")
    second = dag.test(logical_date=pendulum.now("UTC").add(minutes=10))
    assert second.state == "success"
    (alert,) = read_alerts(Settings.from_env())
    assert alert["title"] == "Additive schema change on classicmodels.orders"


def test_replication_lag_is_announced_once_and_its_end_too(tmp_path, monkeypatch, dbt_manifest):
    """A real MariaDB replica of a real primary; delayed replication makes the lag real."""
    import time

    from retail_platform.alerts import read_alerts
    from retail_platform.extract.runner import plan_run
    from retail_platform.sandbox.generator.build import generate
    from retail_platform.sandbox.generator.load import load_source
    from retail_platform.sandbox.generator.presets import get_preset
    from retail_platform.sandbox.mariadb import LocalMariaDB

    primary = LocalMariaDB(
        tmp_path / "primary", server_options=("--log-bin=primary-bin", "--server-id=1", "--binlog-format=ROW")
    ).ensure_running()
    replica = LocalMariaDB(tmp_path / "replica", server_options=("--server-id=2",)).ensure_running()

    def on(instance, *statements):
        conn = instance.root_connect()
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                rows = cur.fetchall() if cur.description else ()
                names = [d[0] for d in cur.description] if cur.description else []
            conn.commit()
            return [dict(zip(names, row, strict=True)) for row in rows]
        finally:
            conn.close()

    def caught_up():
        for _ in range(200):
            status = on(replica, "SHOW SLAVE STATUS")[0]
            if (
                status["Seconds_Behind_Master"] == 0
                and status["Read_Master_Log_Pos"] == status["Exec_Master_Log_Pos"]
            ):
                return
            time.sleep(0.1)
        pytest.fail(f"the replica did not catch up: {status}")

    try:
        (position,) = on(
            primary,
            "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'replpw'",
            "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'",
            "SHOW MASTER STATUS",
        )
        on(
            replica,
            f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, MASTER_USER='repl', "
            f"MASTER_PASSWORD='replpw', MASTER_LOG_FILE='{position['File']}', "
            f"MASTER_LOG_POS={position['Position']}",
            "START SLAVE",
        )
        load_source(generate(get_preset("classic"), seed=3), primary.connection("admin"), replace=True)
        caught_up()
        monkeypatch.setenv("AIRFLOW_CONN_CLASSICMODELS_REPLICA", replica.connection("reader").url())
        monkeypatch.setenv("RETAIL_LAKE_URI", str(tmp_path / "lake"))
        monkeypatch.setenv("RETAIL_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
        monkeypatch.setenv("RETAIL_MAX_REPLICATION_LAG_S", "2")
        settings = Settings.from_env()
        report = run_watch(settings, "classicmodels")
        assert report["replication_lag_s"] == 0 and report["drift"] == []

        # The replica now applies the primary's changes an hour late: the lag grows for real.
        on(replica, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY=3600", "START SLAVE")
        conn = primary.root_connect()
        with conn.cursor() as cur:
            cur.execute("UPDATE classicmodels.customers SET creditLimit = creditLimit + 1 LIMIT 1")
        conn.commit()
        conn.close()
        time.sleep(4)
        # The extraction's plan applies the watch's rule: it announces the lag itself and still plans.
        now = datetime.now(UTC)
        assert len(plan_run(settings, "classicmodels", now - timedelta(hours=1), now)) == len(CONTRACT.tables)
        assert [a["kind"] for a in read_alerts(settings)] == ["source_outage"]
        for _ in range(2):
            report = run_watch(settings, "classicmodels")
            assert report["replication_lag_s"] >= 3
        # Neither the watch nor another plan repeats it, or takes a lagging replica for recovered.
        plan_run(settings, "classicmodels", now - timedelta(hours=1), now)
        assert [a["kind"] for a in read_alerts(settings)] == ["source_outage"]
        on(replica, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY=0", "START SLAVE")
        caught_up()
        run_watch(settings, "classicmodels")
        run_watch(settings, "classicmodels")
        alerts = read_alerts(settings)
        assert [a["kind"] for a in alerts] == ["source_outage", "source_recovered"]
        assert "replication lag" in alerts[0]["text"] and "above 2 s" in alerts[0]["text"]
        assert "behind the store: extraction goes on" in alerts[0]["text"]

        # Replication stopped: the replica answers but serves data that no longer moves.
        on(replica, "STOP SLAVE")
        report = run_watch(settings, "classicmodels")
        assert report["replication_lag_s"] is None
        assert report["replica_problem"].startswith("replication is stopped on the replica (IO thread No")
        alerts = read_alerts(settings)
        assert [a["kind"] for a in alerts] == ["source_outage", "source_recovered", "source_outage"]
        assert "replication is stopped" in alerts[-1]["text"]
        on(replica, "START SLAVE")
        caught_up()
        plan_run(settings, "classicmodels", now - timedelta(hours=1), now)
        assert read_alerts(settings)[-1]["kind"] == "source_recovered"
    finally:
        replica.stop()
        primary.stop()


def test_alert_text_never_carries_urls_or_credentials():
    from retail_platform.alerts import scrub

    text = scrub(
        "connect mysql://retail_reader:s3cr3t@10.0.0.5:3306/classicmodels failed; "
        "webhook https://hooks.slack.com/services/T0/B0/secret answered 500"
    )
    assert "s3cr3t" not in text and "hooks.slack.com" not in text and text.count("<url redacted>") == 2
