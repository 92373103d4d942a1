"""Settings of the sandbox only: where its private servers live and which ports they take."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from retail_platform.settings import Setting, Settings, read_settings

ADMIN_CONN_ID = "classicmodels_admin"
# The source the sandbox's MariaDB plays the replica of (the generator seeds classicmodels); its
# reader connection id is that source contract's `source.connection_id`.
SANDBOX_SOURCE = "classicmodels"


def reader_conn_id(settings: Settings | None = None) -> str:
    from retail_platform.sources import names_for

    return names_for(settings or Settings.from_env(), SANDBOX_SOURCE).connection_id


SETTINGS_DOC: list[Setting] = [
    Setting(
        "AIRFLOW_CONN_CLASSICMODELS_ADMIN",
        None,
        "seeding connection for the data generator (sandbox only; never used by the pipelines)",
        shown="the sandbox's MariaDB",
    ),
    Setting(
        "RETAIL_MARIADB_PORT",
        None,
        "TCP port of the sandbox's MariaDB (127.0.0.1 only)",
        int,
        "mariadb_port",
        shown="a free port",
    ),
    Setting(
        "RETAIL_POSTGRES_PORT",
        None,
        "TCP port of the sandbox's PostgreSQL + pgvector (127.0.0.1 only)",
        int,
        "postgres_port",
        shown="a free port",
    ),
    Setting(
        "RETAIL_AIRFLOW_HOST",
        "127.0.0.1",
        "`./platform up`: the address the Airflow API server (the UI) binds",
        attr="airflow_host",
    ),
    Setting("RETAIL_AIRFLOW_PORT", 8080, "`./platform up`: the Airflow UI's port", int, "airflow_port"),
]


@dataclass(frozen=True)
class SandboxSettings:
    platform: Settings
    mariadb_port: int | None
    postgres_port: int | None
    airflow_host: str
    airflow_port: int

    @property
    def state_dir(self) -> Path:
        return self.platform.state_dir

    @property
    def mariadb_dir(self) -> Path:
        return self.state_dir / "mariadb"

    @property
    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SandboxSettings:
        env = os.environ if environ is None else environ
        return cls(platform=Settings.from_env(environ), **read_settings(SETTINGS_DOC, env))
