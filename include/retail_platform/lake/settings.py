"""Settings of the lake's upkeep: when compaction runs and how long superseded files stay."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from retail_platform.settings import Setting, Settings, read_settings

SETTINGS_DOC: list[Setting] = [
    Setting(
        "RETAIL_COMPACTION_SCHEDULE",
        "30 3 * * *",
        "cron of the compact_lake DAG: merges each table's committed batches into one (daily by default)",
        attr="compaction_schedule",
    ),
    Setting(
        "RETAIL_COMPACTION_GRACE_HOURS",
        6.0,
        "superseded files (merged batches, old full snapshots) are removed only after this many hours, "
        "so a query that started before the switch still finishes",
        float,
        "grace_hours",
        minimum=0,
    ),
    Setting(
        "RETAIL_COMPACTION_MIN_BATCHES",
        2,
        "a table is compacted when readers see at least this many of its batches",
        int,
        "min_batches",
        minimum=1,
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
        values = read_settings(SETTINGS_DOC, env)
        grace = timedelta(hours=values.pop("grace_hours"))
        return cls(platform=Settings.from_env(environ), grace=grace, **values)
