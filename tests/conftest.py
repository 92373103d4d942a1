"""Shared fixtures: a hermetic environment and a real, private MariaDB server.

Tests never use the developer's `.state`: they get `.state/test` (or $RETAIL_TEST_STATE_DIR),
with their own private MariaDB instance, lake and warehouse.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_STATE = Path(os.environ.get("RETAIL_TEST_STATE_DIR", ROOT / ".state" / "test")).resolve()

# Set before anything imports the platform's settings or Airflow.
_HERMETIC_ENV = {
    "RETAIL_PROJECT_DIR": str(ROOT),
    "RETAIL_STATE_DIR": str(TEST_STATE),
    "AIRFLOW_HOME": str(TEST_STATE / "airflow"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "DBT_PROFILES_DIR": str(ROOT / "dbt"),
    "DBT_PROJECT_DIR": str(ROOT / "dbt"),
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    "DO_NOT_TRACK": "1",
}
os.environ.update(_HERMETIC_ENV)
for _name in list(os.environ):
    # Connections the developer may have exported must not leak into the tests.
    if _name.startswith("AIRFLOW_CONN_") or _name in (
        "RETAIL_LAKE_URI",
        "RETAIL_EXTRACT_ENGINE",
        "DBT_TARGET",
    ):
        del os.environ[_name]
(TEST_STATE / "airflow").mkdir(parents=True, exist_ok=True)
# py4j (PySpark's gateway) logs at INFO from __del__ at interpreter exit, after pytest closed its streams.
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def state_dir() -> Path:
    return TEST_STATE


@pytest.fixture(scope="session")
def mariadb():
    """The private MariaDB instance of the test run (started once, stopped at the end), handed to
    the code under test as its Airflow connections, as ./platform hands the sandbox's."""
    from retail_platform.sandbox.mariadb import LocalMariaDB

    instance = LocalMariaDB.from_settings().ensure_running()
    os.environ.update(instance.connection_env())
    yield instance
    for name in instance.env_names:
        os.environ.pop(name, None)
    instance.stop()


@pytest.fixture(scope="session")
def vector_db():
    """The sandbox's PostgreSQL + pgvector of the test run (started once, stopped at the end), handed
    to the code under test as AIRFLOW_CONN_RETAIL_VECTORS, as ./platform hands it on."""
    from retail_platform.sandbox.postgres import LocalPostgres

    instance = LocalPostgres.from_settings().ensure_running()
    os.environ.update(instance.connection_env())
    yield instance
    for name in instance.env_names:
        os.environ.pop(name, None)
    instance.stop()


@pytest.fixture(scope="session")
def admin(mariadb):
    return mariadb.connection("admin")


@pytest.fixture(scope="session")
def reader(mariadb):
    return mariadb.connection("reader")


class SQLRunner:
    """Runs statements with a fresh connection each time (no state leaks between tests)."""

    def query(self, info, sql, params=None):
        from retail_platform.source.connection import connect

        conn = connect(info)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()

    def execute(self, info, *statements):
        from retail_platform.source.connection import connect

        conn = connect(info)
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
            conn.commit()
        finally:
            conn.close()


@pytest.fixture(scope="session")
def sql() -> SQLRunner:
    return SQLRunner()


@pytest.fixture(scope="session")
def dbt_manifest():
    """The precompiled dbt manifest the transform DAG renders its tasks from (dbt parse if stale)."""
    from retail_platform.settings import Settings
    from retail_platform.warehouse.dbt_runner import ensure_manifest

    return ensure_manifest(Settings.from_env())


@pytest.fixture(scope="session")
def airflow_db(dbt_manifest):
    """A fresh Airflow metadata database (SQLite in the test state folder) for the session."""
    from airflow.utils import db

    db.resetdb()


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="session")
def seed_scratch(mariadb, admin):
    """Build a scratch source database (classicmodels_<name>) readable by the read-only user."""
    from retail_platform.sandbox.generator.build import generate
    from retail_platform.sandbox.generator.load import load_source
    from retail_platform.sandbox.generator.presets import get_preset

    built: dict[tuple, object] = {}

    def build(name: str, *, preset="classic", scale=1.0, variant="modern", seed=42, fresh=False):
        key = (name, preset, scale, variant, seed)
        db = admin.with_database(f"classicmodels_{name}")
        if fresh or key not in built:
            load_source(generate(get_preset(preset, scale), seed=seed, variant=variant), db, replace=True)
            mariadb.grant_reader(db.database)
            built[key] = db
        return db

    return build


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3/Glue/IAM server on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(moto_server):
    import uuid

    import boto3

    name = f"lake-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=name)
    return name


def up_env(state: Path, **settings: str) -> dict[str, str]:
    """The environment of a `retail up` of its own in ``state`` (its own port; no connection, AWS
    endpoint or metadata database inherited from the caller), plus ``settings``."""
    from retail_platform.sandbox.processes import free_port

    env = (
        dict(os.environ)
        | {
            "RETAIL_STATE_DIR": str(state),
            "AIRFLOW_HOME": str(state / "airflow"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(state / "airflow" / "logs"),
            "RETAIL_LAKE_URI": str(state / "lake"),
            "RETAIL_DUCKDB_PATH": str(state / "warehouse" / "retail.duckdb"),
            "RETAIL_ALERTS_FILE": str(state / "alerts.jsonl"),
            "RETAIL_AIRFLOW_PORT": str(free_port()),
        }
        | settings
    )
    for name in [n for n in env if n.startswith(("AIRFLOW_CONN_", "AWS_", "AIRFLOW__DATABASE__"))]:
        del env[name]
    return env
