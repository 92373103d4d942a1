"""Load a classicmodels dump as it is, then add the ratings table it lacks.

The dump is replayed by the ``mariadb`` client into the configured database (its own
``CREATE DATABASE``/``USE`` lines are skipped so the target database is the configured
one). Ratings come from the same hidden-taste model as generated data: one rating per
purchased (customer, product) pair, and the tastes are written out as ground truth.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from retail_platform.sandbox.generator import reference as ref
from retail_platform.sandbox.generator.build import (
    GeneratedSource,
    affinity_of,
    draw_tastes,
    ratings_from_affinity,
)
from retail_platform.sandbox.generator.load import (
    SourceNotEmptyError,
    ensure_database,
    existing_tables,
    load_table,
)
from retail_platform.sandbox.generator.presets import Preset
from retail_platform.sandbox.generator.schema import TABLE_ORDER, create_table_sql
from retail_platform.source.connection import MySQLConnectionInfo, connect

_SKIP = re.compile(r"^\s*(CREATE DATABASE|USE\s)", re.IGNORECASE)


class DumpLoadError(RuntimeError):
    pass


def load_dump(
    dump: Path, admin: MySQLConnectionInfo, *, seed: int = 42, replace: bool = False
) -> GeneratedSource:
    if not dump.is_file():
        raise DumpLoadError(f"dump file not found: {dump}")
    ensure_database(admin)
    conn = connect(admin, local_infile=1, autocommit=False)
    try:
        present = [t for t in existing_tables(conn, admin.database) if t in TABLE_ORDER]
        if present and not replace:
            raise SourceNotEmptyError(
                f"database {admin.database} already has tables {', '.join(present)}; "
                "pass --replace to drop and rebuild them"
            )
        with conn.cursor() as cur:
            cur.execute("SET SESSION foreign_key_checks = 0")
            for table in reversed(TABLE_ORDER):
                cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        conn.commit()
        _replay(dump, admin)
        missing = [
            t for t in TABLE_ORDER if t != "ratings" and t not in existing_tables(conn, admin.database)
        ]
        if missing:
            raise DumpLoadError(f"{dump} did not create the classicmodels tables {', '.join(missing)}")
        return _add_ratings(conn, admin, seed)
    finally:
        conn.close()


def _replay(dump: Path, admin: MySQLConnectionInfo) -> None:
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        raise DumpLoadError(
            "the mariadb client is needed to load a dump: install the Debian package mariadb-client"
        )
    with tempfile.NamedTemporaryFile(
        "w", suffix=".sql", encoding="utf-8", errors="surrogateescape"
    ) as filtered:
        with dump.open(encoding="utf-8", errors="surrogateescape") as source:
            for line in source:
                if not _SKIP.match(line):
                    filtered.write(line)
        filtered.flush()
        cmd = [
            client,
            f"--host={admin.host}",
            f"--port={admin.port}",
            f"--user={admin.user}",
            "--default-character-set=utf8mb4",
            admin.database,
        ]
        # The password travels in the environment, never on the command line.
        env = os.environ | {"MYSQL_PWD": admin.password}
        with open(filtered.name, "rb") as stdin:
            result = subprocess.run(cmd, stdin=stdin, capture_output=True, env=env)
    if result.returncode != 0:
        raise DumpLoadError(f"loading {dump} failed: {result.stderr.decode(errors='replace')[-2000:]}")


def _add_ratings(conn, admin: MySQLConnectionInfo, seed: int) -> GeneratedSource:
    with conn.cursor() as cur:
        cur.execute("SELECT customerNumber, country FROM customers ORDER BY customerNumber")
        cust_rows = cur.fetchall()
        cur.execute(
            "SELECT productCode, productLine, productScale, productVendor FROM products ORDER BY productCode"
        )
        prod_rows = cur.fetchall()
        cur.execute(
            "SELECT o.customerNumber, d.productCode FROM orders o JOIN orderdetails d USING (orderNumber) "
            "GROUP BY o.customerNumber, d.productCode ORDER BY o.customerNumber, d.productCode"
        )
        pairs = cur.fetchall()
    lines = sorted({r[1] for r in prod_rows})
    scales = sorted({r[2] for r in prod_rows})
    vendors = sorted({r[3] for r in prod_rows})
    territories = list(ref.TERRITORIES)
    # Dumps carry stray spaces ("Norway  "); unknown countries fall back to the NA territory.
    territory_of = [
        territories.index(ref.COUNTRY_BY_NAME[c.strip()].territory) if c.strip() in ref.COUNTRY_BY_NAME else 0
        for _, c in cust_rows
    ]
    customers = {
        "number": np.array([r[0] for r in cust_rows], dtype=np.int64),
        "territory_idx": np.array(territory_of, dtype=np.int64),
    }
    products = {
        "code": [r[0] for r in prod_rows],
        "line_idx": np.array([lines.index(r[1]) for r in prod_rows]),
        "scale_idx": np.array([scales.index(r[2]) for r in prod_rows]),
        "vendor_idx": np.array([vendors.index(r[3]) for r in prod_rows]),
    }
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2003]))
    tastes = draw_tastes(rng, len(cust_rows), len(prod_rows), len(lines), len(scales), len(vendors))
    cust_index = {n: i for i, n in enumerate(customers["number"])}
    prod_index = {c: i for i, c in enumerate(products["code"])}
    cust = np.array([cust_index[p[0]] for p in pairs], dtype=np.int64)
    prod = np.array([prod_index[p[1]] for p in pairs], dtype=np.int64)
    affinity = affinity_of(customers, products, tastes, cust, prod)
    rating, thresholds = ratings_from_affinity(rng, affinity)
    ratings = pa.table(
        {
            "customerNumber": pa.array([p[0] for p in pairs], pa.int32()),
            "productCode": pa.array([p[1] for p in pairs], pa.string()),
            "productRating": pa.array(rating, pa.int8()),
        }
    )
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS `ratings`")
        cur.execute(create_table_sql("ratings", "original"))
    conn.commit()
    with tempfile.TemporaryDirectory(prefix="retail-ratings-") as tmp:
        load_table(conn, "ratings", ratings, Path(tmp))

    taste_columns = {
        "customerNumber": pa.array(customers["number"], pa.int32()),
        "country": [c for _, c in cust_rows],
        "territory": [territories[t] for t in territory_of],
    }
    for prefix, names, key in (
        ("line_pref", lines, "line_pref"),
        ("scale_pref", scales, "scale_pref"),
        ("vendor_pref", vendors, "vendor_pref"),
    ):
        for j, name in enumerate(names):
            taste_columns[f"{prefix}:{name}"] = tastes[key][:, j]
    noise_free = (1 + np.searchsorted(thresholds, affinity)).astype(np.int8)
    truth = {
        "customer_tastes": pa.table(taste_columns),
        "region_line_effects": pa.table(
            {
                "territory": [t for t in territories for _ in lines],
                "productLine": [line for _ in territories for line in lines],
                "effect": tastes["region_line"].reshape(-1),
            }
        ),
        "product_attributes": pa.table(
            {
                "productCode": products["code"],
                "productLine": [r[1] for r in prod_rows],
                "productScale": [r[2] for r in prod_rows],
                "productVendor": [r[3] for r in prod_rows],
                "quality": tastes["quality"],
            }
        ),
        "ratings_truth": pa.table(
            {
                "customerNumber": ratings["customerNumber"],
                "productCode": ratings["productCode"],
                "affinity": affinity,
                "noise_free_rating": noise_free,
                "productRating": ratings["productRating"],
            }
        ),
    }
    with conn.cursor() as cur:
        counts = {}
        for table in TABLE_ORDER:
            cur.execute(f"SELECT COUNT(*) FROM `{table}`")
            counts[table] = cur.fetchone()[0]
    metadata = {
        "source": "dump",
        "seed": seed,
        "variant": "original",
        "row_counts": counts,
        "rating_thresholds": [float(t) for t in thresholds],
    }
    preset = Preset(
        "dump",
        counts["customers"],
        0,
        counts["products"],
        counts["orders"],
        counts["orderdetails"],
        None,
        None,
        0,
        0,
    )  # type: ignore[arg-type]
    return GeneratedSource(preset, seed, "original", {"ratings": ratings}, truth, metadata)
