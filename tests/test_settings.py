"""Every setting the code reads is documented once, in SETTINGS_DOC, and listed in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from retail_platform.settings import SETTINGS_DOC, Settings

ROOT = Path(__file__).resolve().parents[1]
# Set by ./platform itself, or only in the Glue job's local test run: not operators' settings.
INTERNAL = {"RETAIL_PROJECT_DIR", "RETAIL_JDBC_JAR"}


def test_every_setting_the_code_reads_is_documented_and_in_the_readme():
    documented = {name for name, _, _ in SETTINGS_DOC}
    read = set()
    for folder in ("include", "plugins", "dags"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(re.findall(r"[\"'](RETAIL_[A-Z0-9_]+)[\"']", path.read_text()))
    assert read - INTERNAL <= documented, f"undocumented settings: {sorted(read - INTERNAL - documented)}"
    readme = (ROOT / "README.md").read_text()
    table = {m for m in re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, flags=re.MULTILINE)}
    assert documented <= table, f"missing from the README's configuration table: {sorted(documented - table)}"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RETAIL_MAX_REPLICATION_LAG_S", "5min", "setting RETAIL_MAX_REPLICATION_LAG_S must be a number"),
        ("RETAIL_REPLICA_POOL_SLOTS", "two", "setting RETAIL_REPLICA_POOL_SLOTS must be an integer"),
        ("RETAIL_EXTRACT_ENGINE", "spark", "RETAIL_EXTRACT_ENGINE must be 'local' or 'glue'"),
    ],
)
def test_a_bad_setting_is_named(variable, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_env({variable: value})


def test_numeric_settings_are_read():
    settings = Settings.from_env(
        {"RETAIL_MAX_REPLICATION_LAG_S": "42.5", "RETAIL_SCHEMA_REMINDER_HOURS": "6"}
    )
    assert (settings.max_replication_lag_s, settings.schema_reminder_hours) == (42.5, 6.0)
