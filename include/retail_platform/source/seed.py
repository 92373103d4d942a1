"""Seeding the source: the generator's presets or a dump, plus the ground truth beside them."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from retail_platform.generator.build import generate
from retail_platform.generator.dump import load_dump
from retail_platform.generator.load import existing_tables, load_source, write_ground_truth
from retail_platform.generator.presets import get_preset
from retail_platform.settings import Settings
from retail_platform.source.connection import connect, source_connection
from retail_platform.source.schema import TABLE_ORDER

log = logging.getLogger(__name__)


def source_is_seeded(settings: Settings | None = None) -> bool:
    reader = source_connection("reader", settings)
    conn = connect(reader)
    try:
        return set(TABLE_ORDER) <= set(existing_tables(conn, reader.database))
    finally:
        conn.close()


def seed_source(
    *,
    preset: str = "classic",
    scale: float = 1.0,
    seed: int = 42,
    variant: str = "modern",
    dump: Path | None = None,
    replace: bool = False,
    truth_dir: Path | None = None,
    settings: Settings | None = None,
) -> dict:
    """Build the source with the admin connection; returns a summary with timings."""
    settings = settings or Settings.from_env()
    admin = source_connection("admin", settings)
    truth_dir = truth_dir or settings.ground_truth_dir / admin.database
    started = time.perf_counter()
    if dump is not None:
        source = load_dump(dump, admin, seed=seed, replace=replace)
        generated_s = 0.0
        load_s = time.perf_counter() - started
    else:
        source = generate(get_preset(preset, scale), seed=seed, variant=variant)
        generated_s = time.perf_counter() - started
        work_dir = settings.state_dir / "tmp"
        work_dir.mkdir(parents=True, exist_ok=True)
        load_source(source, admin, replace=replace, work_dir=work_dir)
        load_s = time.perf_counter() - started - generated_s
    write_ground_truth(source, truth_dir)
    return {
        "database": admin.database,
        "target": admin.describe(),
        "variant": source.variant,
        "row_counts": source.metadata["row_counts"],
        "generate_s": round(generated_s, 2),
        "load_s": round(load_s, 2),
        "ground_truth": str(truth_dir),
    }


def source_row_counts(settings: Settings | None = None) -> dict[str, int]:
    """Row counts per source table, read with the read-only user."""
    reader = source_connection("reader", settings)
    conn = connect(reader)
    try:
        present = set(existing_tables(conn, reader.database))
        counts = {}
        with conn.cursor() as cur:
            for table in TABLE_ORDER:
                if table in present:
                    cur.execute(f"SELECT COUNT(*) FROM `{table}`")
                    counts[table] = cur.fetchone()[0]
        return counts
    finally:
        conn.close()
