"""The platform's configuration: every setting comes from an environment variable, declared once.

A ``Setting`` holds a variable's name, type, default, validation and meaning in one declaration:
``from_env`` reads it from there, and the docs' configuration reference and ``retail settings``
are made from the same declarations, so the documented default is the one in force. This module
holds the platform-wide settings; a room with settings of its own keeps them in its own
``settings.py`` with its own ``SETTINGS_DOC``, listed in ``SETTINGS_MODULES``.
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
    "retail_platform.warehouse.settings",
]

_TYPE_NAMES = {str: "text", int: "integer", float: "number", Path: "path"}


@dataclass(frozen=True)
class Setting:
    """One setting, declared once: its variable, type, default, validation and meaning.

    Processes read it with ``read``; the docs' configuration table and ``retail settings`` are made
    from the same declaration, so the documented default is the one the parser uses. It unpacks as
    the (variable, default, meaning) row the tables are made of."""

    name: str
    default: object  # the value when the variable is unset or empty; None: unset, or derived (see shown)
    meaning: str
    kind: type = str  # str, int, float or Path
    attr: str | None = None  # the settings object's field it fills
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # the smallest value allowed
    positive: bool = False  # the value must be above 0
    shown: str | None = None  # the default as the docs show it, when it is derived or not one value

    def read(self, env) -> object:
        raw = env.get(self.name)
        if raw in (None, ""):
            return self.default
        if self.kind in (int, float):
            kind = "an integer" if self.kind is int else "a number"
            value = _number(env, self.name, self.default, self.kind, kind)
        else:
            value = self.kind(raw)
        self._check(value)
        return value

    def _check(self, value) -> None:
        if self.choices and value not in self.choices:
            raise SettingError(
                f"{self.name} must be {' or '.join(repr(c) for c in self.choices)}, got {value!r}"
            )
        if self.positive and value <= 0:
            raise SettingError(f"setting {self.name} must be positive, got {value}")
        if self.minimum is not None and value < self.minimum:
            raise SettingError(f"setting {self.name} must be {self.minimum:g} or more, got {value}")

    @property
    def default_text(self) -> str:
        if self.shown is not None:
            return self.shown
        if self.default is None:
            return "unset"
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    @property
    def type_name(self) -> str:
        if self.name.startswith("AIRFLOW_CONN_"):
            return "connection"
        return _TYPE_NAMES.get(self.kind, self.kind.__name__)

    @property
    def validation(self) -> str:
        rules = []
        if self.choices:
            rules.append("one of " + ", ".join(self.choices))
        if self.positive:
            rules.append("> 0")
        if self.minimum is not None:
            rules.append(f"≥ {self.minimum:g}")
        return "; ".join(rules)

    def __iter__(self):
        return iter((self.name, self.default_text, self.meaning))


def read_settings(declared, env) -> dict[str, object]:
    """{field: value} of every declaration that fills a field of a settings object."""
    return {s.attr: s.read(env) for s in declared if isinstance(s, Setting) and s.attr}


# The platform-wide settings; REDSHIFT_* and DBT_TARGET are read by dbt's profile too.
SETTINGS_DOC: list[Setting] = [
    Setting(
        "RETAIL_STATE_DIR",
        None,
        "local state: private MariaDB, lake, DuckDB file, Airflow home",
        Path,
        "state_dir",
        shown="<project>/.state",
    ),
    Setting(
        "AIRFLOW_CONN_CLASSICMODELS_REPLICA",
        None,
        "read-only connection to the classicmodels replica (mysql://user:pass@host:port/classicmodels), from "
        "the environment or any Airflow connection backend; each source contract names its own "
        "(`source.connection_id`), and extraction and the schema watch use only that",
        shown="required (./platform: the sandbox's MariaDB)",
    ),
    Setting(
        "RETAIL_LAKE_URI",
        None,
        "lake root: a local folder or s3://bucket/prefix",
        attr="lake_uri",
        shown="<state>/lake",
    ),
    Setting(
        "RETAIL_S3_ENDPOINT_URL",
        None,
        "S3 endpoint override (moto's server in tests)",
        attr="s3_endpoint_url",
        shown="AWS",
    ),
    Setting(
        "RETAIL_EXTRACT_ENGINE",
        "local",
        "local (in-process streaming extractor) or glue (AWS Glue job)",
        attr="extract_engine",
        choices=("local", "glue"),
    ),
    Setting(
        "RETAIL_EXTRACT_SCHEDULE",
        "0 * * * *",
        "cron of the extraction DAG's data intervals; data age is at most one interval plus one cycle",
        attr="extract_schedule",
    ),
    Setting(
        "RETAIL_SCHEMA_WATCH_SCHEDULE",
        "*/10 * * * *",
        "cron of the schema watch: a change is reported within one interval",
        attr="schema_watch_schedule",
    ),
    Setting(
        "RETAIL_SCHEMA_REMINDER_HOURS",
        24.0,
        "a breaking change still unresolved is announced again after this many hours",
        float,
        "schema_reminder_hours",
    ),
    Setting(
        "RETAIL_MAX_REPLICATION_LAG_S",
        300.0,
        "replication lag above this (or replication stopped) counts as a source outage",
        float,
        "max_replication_lag_s",
    ),
    Setting(
        "RETAIL_REPLICA_POOL_SLOTS",
        2,
        "concurrent queries allowed on the replica (Airflow pool size)",
        int,
        "replica_pool_slots",
    ),
    Setting(
        "RETAIL_STATEMENT_TIMEOUT_S",
        900,
        "per-statement timeout on the replica, seconds",
        int,
        "statement_timeout_s",
    ),
    Setting(
        "RETAIL_CONTRACTS_DIR",
        None,
        "the source contracts (*.yml): each is one source with its own extraction and schema-watch DAGs",
        Path,
        "contracts_dir",
        shown="<project>/include/contracts",
    ),
    Setting(
        "RETAIL_GLUE_JOB_NAME",
        "retail-extract-{source}",
        "AWS Glue job that runs the Spark extractor ({source}: the contract's source name)",
        attr="glue_job_name",
    ),
    Setting(
        "RETAIL_GLUE_IAM_ROLE", "retail-glue-extract", "IAM role name of the Glue job", attr="glue_iam_role"
    ),
    Setting(
        "RETAIL_GLUE_SCRIPTS_BUCKET",
        None,
        "S3 bucket where the Glue script and package are uploaded",
        attr="glue_scripts_bucket",
        shown="(lake bucket)",
    ),
    Setting(
        "RETAIL_GLUE_SOURCE_SECRET_ID",
        "retail/{source}-replica-reader",
        "Secrets Manager secret the Glue job reads the replica's reader credentials from ({source}: the "
        "contract's source name)",
        attr="glue_source_secret_id",
    ),
    Setting(
        "DBT_TARGET",
        "local",
        "dbt target: local (DuckDB) or prod (Redshift)",
        attr="dbt_target",
        choices=("local", "prod"),
    ),
    Setting(
        "REDSHIFT_HOST",
        None,
        "prod target: the Redshift cluster's host (dbt reads the REDSHIFT_* settings)",
        shown="none",
    ),
    Setting("REDSHIFT_PORT", 5439, "prod target: its port", int),
    Setting("REDSHIFT_USER", "dbt", "prod target: the user dbt builds as"),
    Setting(
        "REDSHIFT_PASSWORD",
        None,
        "prod target: its password (from a secret, never the repository)",
        shown="none",
    ),
    Setting("REDSHIFT_DATABASE", "retail", "prod target: the database"),
    Setting(
        "REDSHIFT_SCHEMA", "public", "prod target: the default schema (models go to staging, analytics, ml)"
    ),
    Setting(
        "REDSHIFT_SPECTRUM_DATABASE", "retail_lake", "prod target: the Glue Data Catalog database of the lake"
    ),
    Setting(
        "REDSHIFT_SPECTRUM_ROLE_ARN",
        None,
        "prod target: the IAM role Spectrum reads the lake with",
        shown="none",
    ),
    Setting(
        "REDSHIFT_UNLOAD_ROLE_ARN",
        None,
        "prod target: the IAM role UNLOAD exports the training table with",
        shown="none",
    ),
    Setting(
        "RETAIL_DUCKDB_PATH",
        None,
        "the published local warehouse readers open (a link to the newest build that passed its tests; "
        "dbt builds in build/ beside it)",
        Path,
        "duckdb_path",
        shown="<state>/warehouse/retail.duckdb",
    ),
    Setting(
        "AIRFLOW_CONN_SLACK_ALERTS",
        None,
        "Slack incoming-webhook connection; unset: alerts go to the log and a file",
    ),
    Setting(
        "RETAIL_ALERTS_FILE",
        None,
        "where alerts go without Slack",
        Path,
        "alerts_file",
        shown="<state>/alerts/alerts.jsonl",
    ),
    Setting(
        "RETAIL_SLACK_TIMEOUT_S",
        10,
        "seconds a Slack webhook may take to answer; past it the delivery fails and its task retries it",
        int,
        "slack_timeout_s",
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
        values = read_settings(SETTINGS_DOC, env)
        # RETAIL_PROJECT_DIR is set by ./platform itself (not an operator's setting).
        project_dir = Path(env.get("RETAIL_PROJECT_DIR") or PROJECT_DIR_DEFAULT).resolve()
        state_dir = Path(values.pop("state_dir") or project_dir / ".state").resolve()
        # Defaults that follow other settings: the state folder and the project.
        derived = {
            "lake_uri": values["lake_uri"] or str(state_dir / "lake"),
            "contracts_dir": values["contracts_dir"] or project_dir / "include" / "contracts",
            "duckdb_path": values["duckdb_path"] or state_dir / "warehouse" / "retail.duckdb",
            "alerts_file": values["alerts_file"] or state_dir / "alerts" / "alerts.jsonl",
        }
        return cls(project_dir=project_dir, state_dir=state_dir, **{**values, **derived})


def _number(env, name: str, default, parse, kind: str):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingError(f"setting {name} must be {kind}, got {raw!r}") from None


def all_settings() -> list[tuple[str, object]]:
    """(module, declaration) for every room's settings, in SETTINGS_MODULES order."""
    import importlib

    return [
        (module, entry)
        for module in SETTINGS_MODULES
        for entry in importlib.import_module(module).SETTINGS_DOC
    ]


def settings_table() -> str:
    """Every setting as a Markdown table, from the declarations (`retail settings`)."""
    rows = ["| variable | type | default | validation | meaning |", "|---|---|---|---|---|"]
    for _module, entry in all_settings():
        name, default, meaning = tuple(entry)
        kind, rules = getattr(entry, "type_name", ""), getattr(entry, "validation", "")
        rows.append(f"| `{name}` | {kind} | {default} | {rules} | {meaning} |")
    return "\n".join(rows) + "\n"
