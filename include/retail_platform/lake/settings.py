"""Settings of the lake's upkeep: when compaction runs and how long superseded files stay."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from retail_platform.settings import SettingError, Settings, float_setting, int_setting

SETTINGS_DOC: list[tuple[str, str, str]] = [
    (
        "RETAIL_COMPACTION_SCHEDULE",
        "30 3 * * *",
        "cron of the compact_lake DAG: merges each table's committed batches into one (daily by default)",
    ),
    (
        "RETAIL_COMPACTION_GRACE_HOURS",
        "6",
        "superseded files (merged batches, old full snapshots) are removed only after this many hours, "
        "so a query that started before the switch still finishes",
    ),
    (
        "RETAIL_COMPACTION_MIN_BATCHES",
        "2",
        "a table is compacted when readers see at least this many of its batches",
    ),
]


@dataclass(frozen=True)
class LakeSettings:
    platform: Settings
    compaction_schedule: str
    grace: timedelta
    min_batches: int

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> LakeSettings:
        env = os.environ if environ is None else environ
        grace_hours = float_setting(env, "RETAIL_COMPACTION_GRACE_HOURS", 6.0)
        min_batches = int_setting(env, "RETAIL_COMPACTION_MIN_BATCHES", 2)
        if grace_hours < 0 or min_batches < 1:
            raise SettingError(
                "RETAIL_COMPACTION_GRACE_HOURS must be 0 or more and RETAIL_COMPACTION_MIN_BATCHES 1 or more"
            )
        return cls(
            platform=Settings.from_env(environ),
            compaction_schedule=env.get("RETAIL_COMPACTION_SCHEDULE") or "30 3 * * *",
            grace=timedelta(hours=grace_hours),
            min_batches=min_batches,
        )
