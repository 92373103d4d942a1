"""Settings of the sandbox only: where its private servers live and which ports they take."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from retail_platform.settings import Settings, int_setting

ADMIN_CONN_ID = "classicmodels_admin"

SETTINGS_DOC: list[tuple[str, str, str]] = [
    (
        "AIRFLOW_CONN_CLASSICMODELS_ADMIN",
        "the sandbox's MariaDB",
        "seeding connection for the data generator (sandbox only; never used by the pipelines)",
    ),
    ("RETAIL_MARIADB_PORT", "a free port", "TCP port of the sandbox's MariaDB (127.0.0.1 only)"),
]


@dataclass(frozen=True)
class SandboxSettings:
    platform: Settings
    mariadb_port: int | None

    @property
    def state_dir(self) -> Path:
        return self.platform.state_dir

    @property
    def mariadb_dir(self) -> Path:
        return self.state_dir / "mariadb"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SandboxSettings:
        env = os.environ if environ is None else environ
        return cls(
            platform=Settings.from_env(environ),
            mariadb_port=int_setting(env, "RETAIL_MARIADB_PORT", None),
        )
