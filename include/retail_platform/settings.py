"""The platform's configuration: every setting comes from an environment variable.

One place lists them all (``SETTINGS_DOC`` feeds the README table), so that the
embedded defaults and production differ only by environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR_DEFAULT = Path(__file__).resolve().parents[2]

# (variable, default, meaning) — the README's configuration table is checked against this.
SETTINGS_DOC: list[tuple[str, str, str]] = [
    ("RETAIL_STATE_DIR", "<project>/.state", "local state: private MariaDB, lake, DuckDB file, Airflow home"),
    (
        "AIRFLOW_CONN_CLASSICMODELS_REPLICA",
        "private MariaDB",
        "read-only source connection (mysql://user:pass@host:port/classicmodels); extraction uses only this",
    ),
    (
        "AIRFLOW_CONN_CLASSICMODELS_ADMIN",
        "private MariaDB",
        "seeding connection for the data generator; never used by the pipelines",
    ),
    ("RETAIL_MARIADB_PORT", "a free port", "TCP port of the private MariaDB instance (127.0.0.1 only)"),
    ("RETAIL_LAKE_URI", "<state>/lake", "lake root: a local folder or s3://bucket/prefix"),
    ("RETAIL_S3_ENDPOINT_URL", "AWS", "S3 endpoint override (moto's server in tests)"),
    ("RETAIL_EXTRACT_ENGINE", "local", "local (in-process streaming extractor) or glue (AWS Glue job)"),
    (
        "RETAIL_EXTRACT_SCHEDULE",
        "0 * * * *",
        "cron of the extraction DAG's data intervals; data age is at most one interval plus one cycle",
    ),
    (
        "RETAIL_SCHEMA_WATCH_SCHEDULE",
        "*/10 * * * *",
        "cron of the schema watch: a change is reported within one interval",
    ),
    (
        "RETAIL_SCHEMA_REMINDER_HOURS",
        "24",
        "a breaking change still unresolved is announced again after this many hours",
    ),
    (
        "RETAIL_MAX_REPLICATION_LAG_S",
        "300",
        "replication lag above this (or replication stopped) counts as a source outage",
    ),
    ("RETAIL_REPLICA_POOL_SLOTS", "2", "concurrent queries allowed on the replica (Airflow pool size)"),
    ("RETAIL_STATEMENT_TIMEOUT_S", "900", "per-statement timeout on the replica, seconds"),
    ("RETAIL_CONTRACT_PATH", "include/contracts/classicmodels.yml", "the source contract"),
    ("RETAIL_GLUE_JOB_NAME", "retail-extract-classicmodels", "AWS Glue job that runs the Spark extractor"),
    ("RETAIL_GLUE_IAM_ROLE", "retail-glue-extract", "IAM role name of the Glue job"),
    (
        "RETAIL_GLUE_SCRIPTS_BUCKET",
        "(lake bucket)",
        "S3 bucket where the Glue script and package are uploaded",
    ),
    (
        "RETAIL_GLUE_SOURCE_SECRET_ID",
        "retail/classicmodels-replica-reader",
        "Secrets Manager secret the Glue job reads the replica's reader credentials from",
    ),
    ("DBT_TARGET", "local", "dbt target: local (DuckDB) or prod (Redshift)"),
    (
        "RETAIL_DBT_EXECUTION_MODE",
        "local",
        "cosmos: local (one dbt run per model task; for `airflow dags test`) or watcher (one dbt build, "
        "tasks report each model; for a scheduler with a triggerer)",
    ),
    ("RETAIL_DUCKDB_PATH", "<state>/warehouse/retail.duckdb", "the local warehouse file"),
    (
        "AIRFLOW_CONN_SLACK_ALERTS",
        "unset",
        "Slack incoming-webhook connection; unset: alerts go to the log and a file",
    ),
    ("RETAIL_ALERTS_FILE", "<state>/alerts/alerts.jsonl", "where alerts go without Slack"),
]


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    state_dir: Path
    source_conn_id: str
    admin_conn_id: str
    mariadb_port: int | None
    lake_uri: str
    s3_endpoint_url: str | None
    extract_engine: str
    extract_schedule: str
    schema_watch_schedule: str
    schema_reminder_hours: float
    max_replication_lag_s: float
    replica_pool_slots: int
    statement_timeout_s: int
    contract_path: Path
    glue_job_name: str
    glue_iam_role: str
    glue_scripts_bucket: str | None
    glue_source_secret_id: str
    dbt_target: str
    dbt_execution_mode: str
    duckdb_path: Path
    alerts_file: Path

    @property
    def local_mariadb_dir(self) -> Path:
        return self.state_dir / "mariadb"

    @property
    def ground_truth_dir(self) -> Path:
        return self.state_dir / "ground_truth"

    @property
    def dbt_project_dir(self) -> Path:
        return self.project_dir / "dbt"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        project_dir = Path(env.get("RETAIL_PROJECT_DIR") or PROJECT_DIR_DEFAULT).resolve()
        state_dir = Path(env.get("RETAIL_STATE_DIR") or project_dir / ".state").resolve()
        engine = env.get("RETAIL_EXTRACT_ENGINE", "local")
        if engine not in ("local", "glue"):
            raise ValueError(f"RETAIL_EXTRACT_ENGINE must be 'local' or 'glue', got {engine!r}")
        target = env.get("DBT_TARGET", "local")
        if target not in ("local", "prod"):
            raise ValueError(f"DBT_TARGET must be 'local' or 'prod', got {target!r}")
        dbt_mode = env.get("RETAIL_DBT_EXECUTION_MODE", "local")
        if dbt_mode not in ("local", "watcher"):
            raise ValueError(f"RETAIL_DBT_EXECUTION_MODE must be 'local' or 'watcher', got {dbt_mode!r}")
        return cls(
            project_dir=project_dir,
            state_dir=state_dir,
            source_conn_id="classicmodels_replica",
            admin_conn_id="classicmodels_admin",
            mariadb_port=_int(env, "RETAIL_MARIADB_PORT", None),
            lake_uri=env.get("RETAIL_LAKE_URI") or str(state_dir / "lake"),
            s3_endpoint_url=env.get("RETAIL_S3_ENDPOINT_URL") or None,
            extract_engine=engine,
            extract_schedule=env.get("RETAIL_EXTRACT_SCHEDULE", "0 * * * *"),
            schema_watch_schedule=env.get("RETAIL_SCHEMA_WATCH_SCHEDULE") or "*/10 * * * *",
            schema_reminder_hours=_float(env, "RETAIL_SCHEMA_REMINDER_HOURS", 24.0),
            max_replication_lag_s=_float(env, "RETAIL_MAX_REPLICATION_LAG_S", 300.0),
            replica_pool_slots=_int(env, "RETAIL_REPLICA_POOL_SLOTS", 2),
            statement_timeout_s=_int(env, "RETAIL_STATEMENT_TIMEOUT_S", 900),
            contract_path=Path(
                env.get("RETAIL_CONTRACT_PATH") or project_dir / "include" / "contracts" / "classicmodels.yml"
            ),
            glue_job_name=env.get("RETAIL_GLUE_JOB_NAME", "retail-extract-classicmodels"),
            glue_iam_role=env.get("RETAIL_GLUE_IAM_ROLE", "retail-glue-extract"),
            glue_scripts_bucket=env.get("RETAIL_GLUE_SCRIPTS_BUCKET") or None,
            glue_source_secret_id=env.get("RETAIL_GLUE_SOURCE_SECRET_ID")
            or "retail/classicmodels-replica-reader",
            dbt_target=target,
            dbt_execution_mode=dbt_mode,
            duckdb_path=Path(env.get("RETAIL_DUCKDB_PATH") or state_dir / "warehouse" / "retail.duckdb"),
            alerts_file=Path(env.get("RETAIL_ALERTS_FILE") or state_dir / "alerts" / "alerts.jsonl"),
        )


def _number(env, name: str, default, parse, kind: str):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ValueError(f"setting {name} must be {kind}, got {raw!r}") from None


def _int(env, name: str, default):
    return _number(env, name, default, int, "an integer")


def _float(env, name: str, default: float) -> float:
    return _number(env, name, default, float, "a number")


def conn_env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"
