"""Settings of the warehouse build: how long a build waits for another one to finish."""

from __future__ import annotations

import os
from dataclasses import dataclass

from retail_platform.settings import Setting, read_settings

SETTINGS_DOC: list[Setting] = [
    Setting(
        "RETAIL_WAREHOUSE_LOCK_WAIT_S",
        120.0,
        "seconds a warehouse build waits for the build lock (another build running) or for DuckDB's lock on "
        "the build file before it fails naming the holder, without retries (the wait was the retry)",
        float,
        "lock_wait_s",
        minimum=0,
    ),
]


@dataclass(frozen=True)
class WarehouseSettings:
    lock_wait_s: float

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WarehouseSettings:
        env = os.environ if environ is None else environ
        return cls(**read_settings(SETTINGS_DOC, env))
