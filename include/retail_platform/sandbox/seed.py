"""Seeding the source: the generator's presets or a dump, plus the ground truth beside them."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from retail_platform.connections import lookup_connection
from retail_platform.sandbox.generator.build import generate
from retail_platform.sandbox.generator.dump import load_dump
from retail_platform.sandbox.generator.load import existing_tables, load_source, write_ground_truth
from retail_platform.sandbox.generator.presets import get_preset
from retail_platform.sandbox.generator.schema import TABLE_ORDER
from retail_platform.sandbox.generator.topup import TopUp, top_up
from retail_platform.sandbox.settings import ADMIN_CONN_ID, reader_conn_id
from retail_platform.settings import Settings
from retail_platform.source.connection import MySQLConnectionInfo, connect, mysql_info

log = logging.getLogger(__name__)


def sandbox_source(settings: Settings | None = None) -> tuple[MySQLConnectionInfo, MySQLConnectionInfo]:
    """The source's reader and admin connections, from the environment; when it sets neither, the
    sandbox's MariaDB is started and its connections are put in this process's environment, so that
    every process launched from here sees the same source."""
    from retail_platform.connections import conn_env_var
    from retail_platform.errors import ConfigurationError
    from retail_platform.sandbox import launcher

    settings = settings or Settings.from_env()
    reader_id = reader_conn_id(settings)
    reader_var, admin_var = conn_env_var(reader_id), conn_env_var(ADMIN_CONN_ID)
    if os.environ.get(reader_var) and not os.environ.get(admin_var):
        raise ConfigurationError(
            f"{reader_var} points at a source of your own, but {admin_var} is not set: the generator "
            "needs an admin connection to seed it, and never writes through the read-only one"
        )
    os.environ.update(launcher.start(only={"mariadb"}))
    reader = mysql_info(lookup_connection(reader_id, use_airflow=False))
    admin = mysql_info(lookup_connection(ADMIN_CONN_ID, use_airflow=False))
    return reader, admin


def source_is_seeded(settings: Settings | None = None) -> bool:
    reader, _ = sandbox_source(settings)
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
    ends_now: bool = False,
) -> dict:
    """Build the source with the admin connection; returns a summary with timings.

    ``ends_now`` shifts the generated calendar so that the data ends now with a spike rising
    (`./platform run` asks for it on the modern variant; `bring_source_to_present` keeps it there
    on later runs); without it the preset's own dates are kept (the classic preset: the published
    dump's), as the tests and benchmarks expect."""
    settings = settings or Settings.from_env()
    _, admin = sandbox_source(settings)
    truth_dir = truth_dir or settings.ground_truth_dir / admin.database
    started = time.perf_counter()
    if dump is not None:
        source = load_dump(dump, admin, seed=seed, replace=replace)
        generated_s = 0.0
        load_s = time.perf_counter() - started
    else:
        ends_at = datetime.now(UTC) if ends_now else None
        source = generate(get_preset(preset, scale), seed=seed, variant=variant, ends_at=ends_at)
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
        "calendar": source.metadata.get("calendar", "preset"),
        "row_counts": source.metadata["row_counts"],
        "generate_s": round(generated_s, 2),
        "load_s": round(load_s, 2),
        "ground_truth": str(truth_dir),
    }


def bring_source_to_present(
    settings: Settings | None = None, *, now: datetime | None = None, seed: int | None = None
) -> TopUp:
    """A seeded source whose last write is over an hour old is topped up to now with the live
    store's orders and a spike rising now (``generator/topup.py``); what it holds is kept as it
    is, so the lake's batches and the extraction's watermarks stay valid."""
    settings = settings or Settings.from_env()
    _, admin = sandbox_source(settings)
    return top_up(admin, now=now, truth_dir=settings.ground_truth_dir / admin.database, seed=seed)


def source_row_counts(settings: Settings | None = None) -> dict[str, int]:
    """Row counts per source table, read with the read-only user."""
    reader, _ = sandbox_source(settings)
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
