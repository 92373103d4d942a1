"""The platform's configuration: every setting comes from an environment variable.

This module holds the platform-wide settings; a room with settings of its own (the recommender,
serving, the dashboard, the sandbox) keeps them in its own ``settings.py`` with its own
``SETTINGS_DOC``, listed in ``SETTINGS_MODULES``. A test checks that the README's configuration
table lists every setting the code reads, so embedded defaults and production differ only by
environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from retail_platform.errors import ConfigurationError

PROJECT_DIR_DEFAULT = Path(__file__).resolve().parents[2]


class SettingError(ConfigurationError):
    pass


# Rooms with settings of their own: each module has a SETTINGS_DOC like the one below.
SETTINGS_MODULES = [
    "retail_platform.settings",
    "retail_platform.sandbox.settings",
    "retail_platform.recommender.settings",
    "retail_platform.dashboard.settings",
    "retail_platform.serving.settings",
    "retail_platform.lake.settings",
]

# (variable, default, meaning) — the README's configuration table is checked against this.
SETTINGS_DOC: list[tuple[str, str, str]] = [
    ("RETAIL_STATE_DIR", "<project>/.state", "local state: private MariaDB, lake, DuckDB file, Airflow home"),
    (
        "AIRFLOW_CONN_CLASSICMODELS_REPLICA",
        "required (./platform: the sandbox's MariaDB)",
        "read-only connection to the classicmodels replica (mysql://user:pass@host:port/classicmodels), from "
        "the environment or any Airflow connection backend; each source contract names its own "
        "(`source.connection_id`), and extraction and the schema watch use only that",
    ),
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
    (
        "RETAIL_CONTRACTS_DIR",
        "include/contracts",
        "the source contracts (*.yml): each is one source with its own extraction and schema-watch DAGs",
    ),
    (
        "RETAIL_GLUE_JOB_NAME",
        "retail-extract-{source}",
        "AWS Glue job that runs the Spark extractor ({source}: the contract's source name)",
    ),
    ("RETAIL_GLUE_IAM_ROLE", "retail-glue-extract", "IAM role name of the Glue job"),
    (
        "RETAIL_GLUE_SCRIPTS_BUCKET",
        "(lake bucket)",
        "S3 bucket where the Glue script and package are uploaded",
    ),
    (
        "RETAIL_GLUE_SOURCE_SECRET_ID",
        "retail/{source}-replica-reader",
        "Secrets Manager secret the Glue job reads the replica's reader credentials from ({source}: the "
        "contract's source name)",
    ),
    ("DBT_TARGET", "local", "dbt target: local (DuckDB) or prod (Redshift)"),
    ("REDSHIFT_HOST", "none", "prod target: the Redshift cluster's host (dbt reads the REDSHIFT_* settings)"),
    ("REDSHIFT_PORT", "5439", "prod target: its port"),
    ("REDSHIFT_USER", "dbt", "prod target: the user dbt builds as"),
    ("REDSHIFT_PASSWORD", "none", "prod target: its password (from a secret, never the repository)"),
    ("REDSHIFT_DATABASE", "retail", "prod target: the database"),
    ("REDSHIFT_SCHEMA", "public", "prod target: the default schema (models go to staging, analytics, ml)"),
    ("REDSHIFT_SPECTRUM_DATABASE", "retail_lake", "prod target: the Glue Data Catalog database of the lake"),
    ("REDSHIFT_SPECTRUM_ROLE_ARN", "none", "prod target: the IAM role Spectrum reads the lake with"),
    ("REDSHIFT_UNLOAD_ROLE_ARN", "none", "prod target: the IAM role UNLOAD exports the training table with"),
    (
        "RETAIL_DBT_EXECUTION_MODE",
        "build_first",
        "cosmos: build_first (one dbt build, then one task per model and per model's tests reports its "
        "result; works under `airflow dags test` and any scheduler), watcher (one dbt build that the "
        "per-model tasks report on as it goes; needs a triggerer) or local (one dbt run per model task)",
    ),
    (
        "RETAIL_DUCKDB_PATH",
        "<state>/warehouse/retail.duckdb",
        "the published local warehouse readers open (a link to the newest build that passed its tests; "
        "dbt builds in build/ beside it)",
    ),
    (
        "AIRFLOW_CONN_SLACK_ALERTS",
        "unset",
        "Slack incoming-webhook connection; unset: alerts go to the log and a file",
    ),
    ("RETAIL_ALERTS_FILE", "<state>/alerts/alerts.jsonl", "where alerts go without Slack"),
    (
        "RETAIL_SLACK_TIMEOUT_S",
        "10",
        "seconds a Slack webhook may take to answer; past it the delivery fails and its task retries it",
    ),
]


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    state_dir: Path
    lake_uri: str
    s3_endpoint_url: str | None
    extract_engine: str
    extract_schedule: str
    schema_watch_schedule: str
    schema_reminder_hours: float
    max_replication_lag_s: float
    replica_pool_slots: int
    statement_timeout_s: int
    contracts_dir: Path
    glue_job_name: str
    glue_iam_role: str
    glue_scripts_bucket: str | None
    glue_source_secret_id: str
    dbt_target: str
    dbt_execution_mode: str
    duckdb_path: Path
    alerts_file: Path
    slack_timeout_s: int

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
        engine = choice_setting(env, "RETAIL_EXTRACT_ENGINE", ("local", "glue"))
        target = choice_setting(env, "DBT_TARGET", ("local", "prod"))
        dbt_mode = choice_setting(env, "RETAIL_DBT_EXECUTION_MODE", ("build_first", "watcher", "local"))
        return cls(
            project_dir=project_dir,
            state_dir=state_dir,
            lake_uri=env.get("RETAIL_LAKE_URI") or str(state_dir / "lake"),
            s3_endpoint_url=env.get("RETAIL_S3_ENDPOINT_URL") or None,
            extract_engine=engine,
            extract_schedule=env.get("RETAIL_EXTRACT_SCHEDULE", "0 * * * *"),
            schema_watch_schedule=env.get("RETAIL_SCHEMA_WATCH_SCHEDULE") or "*/10 * * * *",
            schema_reminder_hours=float_setting(env, "RETAIL_SCHEMA_REMINDER_HOURS", 24.0),
            max_replication_lag_s=float_setting(env, "RETAIL_MAX_REPLICATION_LAG_S", 300.0),
            replica_pool_slots=int_setting(env, "RETAIL_REPLICA_POOL_SLOTS", 2),
            statement_timeout_s=int_setting(env, "RETAIL_STATEMENT_TIMEOUT_S", 900),
            contracts_dir=Path(env.get("RETAIL_CONTRACTS_DIR") or project_dir / "include" / "contracts"),
            glue_job_name=env.get("RETAIL_GLUE_JOB_NAME") or "retail-extract-{source}",
            glue_iam_role=env.get("RETAIL_GLUE_IAM_ROLE", "retail-glue-extract"),
            glue_scripts_bucket=env.get("RETAIL_GLUE_SCRIPTS_BUCKET") or None,
            glue_source_secret_id=env.get("RETAIL_GLUE_SOURCE_SECRET_ID") or "retail/{source}-replica-reader",
            dbt_target=target,
            dbt_execution_mode=dbt_mode,
            duckdb_path=Path(env.get("RETAIL_DUCKDB_PATH") or state_dir / "warehouse" / "retail.duckdb"),
            alerts_file=Path(env.get("RETAIL_ALERTS_FILE") or state_dir / "alerts" / "alerts.jsonl"),
            slack_timeout_s=int_setting(env, "RETAIL_SLACK_TIMEOUT_S", 10),
        )


def _number(env, name: str, default, parse, kind: str):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingError(f"setting {name} must be {kind}, got {raw!r}") from None


def int_setting(env, name: str, default):
    return _number(env, name, default, int, "an integer")


def float_setting(env, name: str, default: float) -> float:
    return _number(env, name, default, float, "a number")


def choice_setting(env, name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``; the first is the default."""
    value = env.get(name) or choices[0]
    if value not in choices:
        raise SettingError(f"{name} must be {' or '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def settings_table() -> str:
    """The README's configuration table, from every room's SETTINGS_DOC (`retail settings`)."""
    import importlib

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for module in SETTINGS_MODULES:
        for name, default, meaning in importlib.import_module(module).SETTINGS_DOC:
            rows.append(f"| `{name}` | {default} | {meaning} |")
    return "\n".join(rows) + "\n"
