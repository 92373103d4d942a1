"""The platform's main job end to end on the embedded defaults (`./platform run`).

1. the source: the configured replica, or the private MariaDB instance;
2. seed it with the generator when it is empty (or when asked to);
3. show what is in it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from retail_platform.settings import Settings
from retail_platform.source.connection import configured_connection, source_connection
from retail_platform.source.seed import seed_source, source_is_seeded, source_row_counts

log = logging.getLogger(__name__)


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run_pipeline(
    *,
    preset: str = "classic",
    scale: float = 1.0,
    seed: int = 42,
    variant: str = "modern",
    dump: Path | None = None,
    regenerate: bool = False,
    stop_source: bool = False,
    settings: Settings | None = None,
) -> int:
    settings = settings or Settings.from_env()
    _banner("source")
    reader = source_connection("reader", settings)
    where = "configured" if configured_connection(settings.source_conn_id) else "private MariaDB"
    print(f"{where}: {reader.describe()} (read-only user)")

    if regenerate or not source_is_seeded(settings):
        _banner("seeding the source" + (f" from {dump}" if dump else f" (preset {preset}, seed {seed})"))
        summary = seed_source(
            preset=preset, scale=scale, seed=seed, variant=variant, dump=dump, replace=True, settings=settings
        )
        print(
            f"generated in {summary['generate_s']} s, loaded in {summary['load_s']} s; "
            f"ground truth in {summary['ground_truth']}"
        )
    else:
        print("source already seeded (pass --regenerate to rebuild it)")

    _banner("what is in the source")
    counts = source_row_counts(settings)
    width = max(map(len, counts))
    for table, count in counts.items():
        print(f"  {table:<{width}}  {count:>10,}")

    if stop_source and configured_connection(settings.source_conn_id) is None:
        from retail_platform.source.local_mariadb import LocalMariaDB

        LocalMariaDB.from_settings(settings).stop()
        print("\nprivate MariaDB stopped")
    return 0
