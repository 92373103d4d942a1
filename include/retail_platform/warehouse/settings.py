"""Settings of the warehouse build: how long a build waits for another one to finish."""

from __future__ import annotations

import os
from dataclasses import dataclass

from retail_platform.settings import SettingError, float_setting

SETTINGS_DOC: list[tuple[str, str, str]] = [
    (
        "RETAIL_WAREHOUSE_LOCK_WAIT_S",
        "120",
        "seconds a warehouse build waits for the build lock (another build running) or for DuckDB's lock on "
        "the build file before it fails naming the holder, without retries (the wait was the retry)",
    ),
]


@dataclass(frozen=True)
class WarehouseSettings:
    lock_wait_s: float

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WarehouseSettings:
        env = os.environ if environ is None else environ
        wait = float_setting(env, "RETAIL_WAREHOUSE_LOCK_WAIT_S", 120.0)
        if wait < 0:
            raise SettingError("RETAIL_WAREHOUSE_LOCK_WAIT_S must be 0 or more")
        return cls(lock_wait_s=wait)
