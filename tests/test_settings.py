"""Every setting the code reads is declared once, in a SETTINGS_DOC, and listed in the docs' configuration reference."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from retail_platform.settings import SETTINGS_MODULES, Settings

ROOT = Path(__file__).resolve().parents[1]
# Set by ./platform itself, or only in the Glue job's local test run: not operators' settings.
INTERNAL = {"RETAIL_PROJECT_DIR", "RETAIL_JDBC_JAR", "RETAIL_DUCKDB_BUILD_PATH"}
# dbt's own variables, which the platform sets for dbt (dbt_runner.dbt_env): not operators' settings.
INTERNAL |= {"DBT_PROFILES_DIR", "DBT_SEND_ANONYMOUS_USAGE_STATS"}
# dbt's own variables and the ones dbt_runner sets for dbt from the settings above.
DBT_INTERNAL = {"DBT_PROFILES_DIR", "RETAIL_STATE_DIR", "RETAIL_LAKE_URI"} | INTERNAL
SETTING_NAME = r"((?:RETAIL|REDSHIFT|DBT)_[A-Z0-9_]+|AIRFLOW_CONN_[A-Z0-9_]+)"


def documented() -> dict[str, str]:
    docs = {}
    for module in SETTINGS_MODULES:
        for name, _default, meaning in importlib.import_module(module).SETTINGS_DOC:
            assert name not in docs, f"{name} is documented twice ({module})"
            docs[name] = meaning
    return docs


def reference_table() -> set[str]:
    """The variables of the docs' configuration reference, as the site's build writes it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hook", ROOT / "docs" / "hooks" / "reference.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", hook.configuration_page(), flags=re.MULTILINE))


def test_every_setting_the_python_code_reads_is_documented_and_in_the_reference():
    read = set()
    for folder in ("include", "plugins", "dags"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(re.findall(rf"[\"']{SETTING_NAME}[\"']", path.read_text()))
    read -= INTERNAL
    docs = documented()
    assert read <= set(docs), f"undocumented settings: {sorted(read - set(docs))}"
    assert set(docs) <= reference_table(), (
        f"missing from the configuration reference: {sorted(set(docs) - reference_table())}"
    )


def test_every_setting_dbt_reads_is_documented():
    """dbt reads its settings with env_var('NAME'): profiles, the project, models and macros."""
    read = set()
    for path in (ROOT / "dbt").rglob("*"):
        if path.suffix in (".yml", ".sql") and "target" not in path.parts:
            read |= set(re.findall(rf"env_var\(\s*['\"]{SETTING_NAME}['\"]", path.read_text()))
    assert read, "the scan found dbt's env_var calls"
    read -= DBT_INTERNAL
    docs = documented()
    assert read <= set(docs), f"dbt reads undocumented settings: {sorted(read - set(docs))}"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RETAIL_MAX_REPLICATION_LAG_S", "5min", "setting RETAIL_MAX_REPLICATION_LAG_S must be a number"),
        ("RETAIL_REPLICA_POOL_SLOTS", "two", "setting RETAIL_REPLICA_POOL_SLOTS must be an integer"),
        ("RETAIL_EXTRACT_ENGINE", "spark", "RETAIL_EXTRACT_ENGINE must be 'local' or 'glue'"),
    ],
)
def test_a_bad_setting_is_named(variable, value, message):
    from retail_platform.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=re.escape(message)):
        Settings.from_env({variable: value})


def test_numeric_settings_are_read():
    settings = Settings.from_env(
        {"RETAIL_MAX_REPLICATION_LAG_S": "42.5", "RETAIL_SCHEMA_REMINDER_HOURS": "6"}
    )
    assert (settings.max_replication_lag_s, settings.schema_reminder_hours) == (42.5, 6.0)
