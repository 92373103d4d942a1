"""The data generator against a real MariaDB: schema, keys, determinism, realism, ground truth."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from retail_platform.sandbox.generator import reference as ref
from retail_platform.sandbox.generator.build import generate
from retail_platform.sandbox.generator.dump import load_dump
from retail_platform.sandbox.generator.live import run_live
from retail_platform.sandbox.generator.load import SourceNotEmptyError, load_source, write_ground_truth
from retail_platform.sandbox.generator.presets import get_preset

# classicmodels v3.1 as published (mysqltutorial.org), column for column:
# (column, type, nullable, key). Keys: PRI primary, MUL indexed.
V31_COLUMNS = {
    "customers": [
        ("customerNumber", "int(11)", "NO", "PRI"),
        ("customerName", "varchar(50)", "NO", ""),
        ("contactLastName", "varchar(50)", "NO", ""),
        ("contactFirstName", "varchar(50)", "NO", ""),
        ("phone", "varchar(50)", "NO", ""),
        ("addressLine1", "varchar(50)", "NO", ""),
        ("addressLine2", "varchar(50)", "YES", ""),
        ("city", "varchar(50)", "NO", ""),
        ("state", "varchar(50)", "YES", ""),
        ("postalCode", "varchar(15)", "YES", ""),
        ("country", "varchar(50)", "NO", ""),
        ("salesRepEmployeeNumber", "int(11)", "YES", "MUL"),
        ("creditLimit", "decimal(10,2)", "YES", ""),
    ],
    "employees": [
        ("employeeNumber", "int(11)", "NO", "PRI"),
        ("lastName", "varchar(50)", "NO", ""),
        ("firstName", "varchar(50)", "NO", ""),
        ("extension", "varchar(10)", "NO", ""),
        ("email", "varchar(100)", "NO", ""),
        ("officeCode", "varchar(10)", "NO", "MUL"),
        ("reportsTo", "int(11)", "YES", "MUL"),
        ("jobTitle", "varchar(50)", "NO", ""),
    ],
    "offices": [
        ("officeCode", "varchar(10)", "NO", "PRI"),
        ("city", "varchar(50)", "NO", ""),
        ("phone", "varchar(50)", "NO", ""),
        ("addressLine1", "varchar(50)", "NO", ""),
        ("addressLine2", "varchar(50)", "YES", ""),
        ("state", "varchar(50)", "YES", ""),
        ("country", "varchar(50)", "NO", ""),
        ("postalCode", "varchar(15)", "NO", ""),
        ("territory", "varchar(10)", "NO", ""),
    ],
    "orderdetails": [
        ("orderNumber", "int(11)", "NO", "PRI"),
        ("productCode", "varchar(15)", "NO", "PRI"),
        ("quantityOrdered", "int(11)", "NO", ""),
        ("priceEach", "decimal(10,2)", "NO", ""),
        ("orderLineNumber", "smallint(6)", "NO", ""),
    ],
    "orders": [
        ("orderNumber", "int(11)", "NO", "PRI"),
        ("orderDate", "date", "NO", ""),
        ("requiredDate", "date", "NO", ""),
        ("shippedDate", "date", "YES", ""),
        ("status", "varchar(15)", "NO", ""),
        ("comments", "text", "YES", ""),
        ("customerNumber", "int(11)", "NO", "MUL"),
    ],
    "payments": [
        ("customerNumber", "int(11)", "NO", "PRI"),
        ("checkNumber", "varchar(50)", "NO", "PRI"),
        ("paymentDate", "date", "NO", ""),
        ("amount", "decimal(10,2)", "NO", ""),
    ],
    "productlines": [
        ("productLine", "varchar(50)", "NO", "PRI"),
        ("textDescription", "varchar(4000)", "YES", ""),
        ("htmlDescription", "mediumtext", "YES", ""),
        ("image", "mediumblob", "YES", ""),
    ],
    "products": [
        ("productCode", "varchar(15)", "NO", "PRI"),
        ("productName", "varchar(70)", "NO", ""),
        ("productLine", "varchar(50)", "NO", "MUL"),
        ("productScale", "varchar(10)", "NO", ""),
        ("productVendor", "varchar(50)", "NO", ""),
        ("productDescription", "text", "NO", ""),
        ("quantityInStock", "smallint(6)", "NO", ""),
        ("buyPrice", "decimal(10,2)", "NO", ""),
        ("MSRP", "decimal(10,2)", "NO", ""),
    ],
    "ratings": [
        ("customerNumber", "int(11)", "NO", "PRI"),
        ("productCode", "varchar(15)", "NO", "PRI"),
        ("productRating", "tinyint(4)", "NO", ""),
    ],
}
V31_FOREIGN_KEYS = {
    ("customers", "customers_ibfk_1", "salesRepEmployeeNumber", "employees", "employeeNumber"),
    ("employees", "employees_ibfk_1", "reportsTo", "employees", "employeeNumber"),
    ("employees", "employees_ibfk_2", "officeCode", "offices", "officeCode"),
    ("orderdetails", "orderdetails_ibfk_1", "orderNumber", "orders", "orderNumber"),
    ("orderdetails", "orderdetails_ibfk_2", "productCode", "products", "productCode"),
    ("orders", "orders_ibfk_1", "customerNumber", "customers", "customerNumber"),
    ("payments", "payments_ibfk_1", "customerNumber", "customers", "customerNumber"),
    ("products", "products_ibfk_1", "productLine", "productlines", "productLine"),
    ("ratings", "ratings_ibfk_1", "customerNumber", "customers", "customerNumber"),
    ("ratings", "ratings_ibfk_2", "productCode", "products", "productCode"),
}
UPDATED_AT = ("updated_at", "timestamp(6)", "NO", "MUL")
MODERN_EXTRA = {
    "customers": [UPDATED_AT],
    "products": [UPDATED_AT],
    "orders": [("orderTimestamp", "datetime", "YES", ""), UPDATED_AT],
    "orderdetails": [UPDATED_AT],
    "payments": [UPDATED_AT],
    "ratings": [UPDATED_AT],
}


@pytest.fixture(scope="module")
def classic(admin):
    """The classic preset, modern variant, in its own database."""
    db = admin.with_database("classicmodels_gen")
    source = generate(get_preset("classic"), seed=7, variant="modern")
    load_source(source, db, replace=True)
    return source, db


@pytest.fixture(scope="module")
def original(admin):
    db = admin.with_database("classicmodels_gen_orig")
    source = generate(get_preset("classic"), seed=7, variant="original")
    load_source(source, db, replace=True)
    return source, db


def _columns(sql, info, database):
    rows = sql.query(
        info,
        "SELECT table_name, column_name, column_type, is_nullable, column_key FROM information_schema.columns "
        "WHERE table_schema = %s ORDER BY table_name, ordinal_position",
        (database,),
    )
    out: dict[str, list] = {}
    for table, *column in rows:
        out.setdefault(table, []).append(tuple(column))
    return out


def _foreign_keys(sql, info, database):
    rows = sql.query(
        info,
        "SELECT table_name, constraint_name, column_name, referenced_table_name, referenced_column_name "
        "FROM information_schema.key_column_usage WHERE table_schema = %s AND referenced_table_name IS NOT NULL",
        (database,),
    )
    return set(rows)


def test_original_schema_is_classicmodels_v31_column_for_column(sql, original):
    _, db = original
    assert _columns(sql, db, db.database) == V31_COLUMNS
    assert _foreign_keys(sql, db, db.database) == V31_FOREIGN_KEYS
    charsets = sql.query(
        db,
        "SELECT t.table_name, c.character_set_name FROM information_schema.tables t JOIN "
        "information_schema.collation_character_set_applicability c ON c.collation_name = t.table_collation "
        "WHERE t.table_schema = %s",
        (db.database,),
    )
    assert {charset for _, charset in charsets} == {"latin1"}


def test_modern_schema_only_appends_documented_columns(sql, classic):
    _, db = classic
    expected = {table: cols + MODERN_EXTRA.get(table, []) for table, cols in V31_COLUMNS.items()}
    assert _columns(sql, db, db.database) == expected
    assert _foreign_keys(sql, db, db.database) == V31_FOREIGN_KEYS


def test_classic_preset_has_the_real_dump_sizes(sql, classic):
    _, db = classic
    counts = {
        t: sql.query(db, f"SELECT COUNT(*) FROM `{t}`")[0][0]
        for t in ("customers", "products", "orders", "orderdetails", "productlines")
    }
    assert counts == {
        "customers": 122,
        "products": 110,
        "orders": 326,
        "orderdetails": 2996,
        "productlines": 7,
    }


@pytest.mark.parametrize("fixture", ["classic", "original"])
def test_foreign_keys_hold(sql, request, fixture):
    _, db = request.getfixturevalue(fixture)
    for table, _, column, parent, parent_column in V31_FOREIGN_KEYS:
        orphans = sql.query(
            db,
            f"SELECT COUNT(*) FROM `{table}` c LEFT JOIN `{parent}` p ON c.`{column}` = p.`{parent_column}` "
            f"WHERE c.`{column}` IS NOT NULL AND p.`{parent_column}` IS NULL",
        )[0][0]
        assert orphans == 0, f"{table}.{column} has {orphans} rows without a {parent}"


def test_same_seed_same_data_other_seed_other_data(sql, admin, classic):
    source, db = classic
    again = generate(get_preset("classic"), seed=7, variant="modern")
    for name, table in source.tables.items():
        assert table.equals(again.tables[name]), f"{name} differs between two runs with the same seed"
    for name, table in source.truth.items():
        assert table.equals(again.truth[name]), f"ground truth {name} differs"
    copy = admin.with_database("classicmodels_gen_copy")
    load_source(again, copy, replace=True)
    for table in source.tables:
        ours = sql.query(db, f"CHECKSUM TABLE `{table}`")[0][1]
        theirs = sql.query(copy, f"CHECKSUM TABLE `{table}`")[0][1]
        assert ours == theirs, f"{table}: the same seed loaded different rows"
    other = generate(get_preset("classic"), seed=8, variant="modern")
    assert not other.tables["orderdetails"].equals(source.tables["orderdetails"])


def test_scaled_prod_preset_is_deterministic():
    preset = get_preset("prod", 0.01)
    a, b = generate(preset, seed=3), generate(preset, seed=3)
    assert a.tables["orderdetails"].num_rows > 30_000
    for name in a.tables:
        assert a.tables[name].equals(b.tables[name]), name


def test_data_is_realistic(sql, classic):
    _, db = classic
    assert sql.query(db, "SELECT COUNT(*) FROM products WHERE buyPrice >= MSRP OR buyPrice <= 0")[0][0] == 0
    assert (
        sql.query(db, "SELECT COUNT(*) FROM orderdetails WHERE priceEach <= 0 OR quantityOrdered <= 0")[0][0]
        == 0
    )
    # Shipped-like orders have a shipped date after the order date; others have none.
    assert (
        sql.query(
            db,
            "SELECT COUNT(*) FROM orders WHERE (status IN ('Shipped','Resolved','Disputed')) <> (shippedDate IS NOT NULL)"
            " OR shippedDate < orderDate OR requiredDate < orderDate OR DATE(orderTimestamp) <> orderDate",
        )[0][0]
        == 0
    )
    # Each shipped order is paid exactly: one payment a shipped order, totals equal per customer.
    mismatched = sql.query(
        db,
        "SELECT o.customerNumber FROM (SELECT o.customerNumber, SUM(d.quantityOrdered * d.priceEach) AS owed "
        "FROM orders o JOIN orderdetails d USING (orderNumber) WHERE o.shippedDate IS NOT NULL "
        "GROUP BY o.customerNumber) o LEFT JOIN (SELECT customerNumber, SUM(amount) AS paid FROM payments "
        "GROUP BY customerNumber) p USING (customerNumber) WHERE p.paid IS NULL OR p.paid <> o.owed",
    )
    assert mismatched == ()
    assert (
        sql.query(db, "SELECT COUNT(*) FROM payments")[0][0]
        == sql.query(db, "SELECT COUNT(*) FROM orders WHERE shippedDate IS NOT NULL")[0][0]
    )
    # Cities, states and postal codes belong to their countries.
    cities = {(country.name, city.name): city for country in ref.COUNTRIES for city in country.cities}
    for city, state, postal, country in sql.query(
        db, "SELECT city, state, postalCode, country FROM customers"
    ):
        known = cities[(country, city)]
        assert state == known.state, (city, state)
        assert (postal is None) == (known.postal is None)
        if postal:
            assert len(postal) == len(known.postal)
    # Customers without credit never ordered; order numbers grow with time.
    assert (
        sql.query(
            db,
            "SELECT COUNT(*) FROM orders o JOIN customers c USING (customerNumber) WHERE c.creditLimit = 0",
        )[0][0]
        == 0
    )
    stamps = [row[0] for row in sql.query(db, "SELECT orderTimestamp FROM orders ORDER BY orderNumber")]
    assert stamps == sorted(stamps)


def test_text_keeps_accents_in_latin1(sql, classic):
    _, db = classic
    names = {row[0] for row in sql.query(db, "SELECT contactFirstName FROM customers")} | {
        row[0] for row in sql.query(db, "SELECT city FROM customers")
    }
    assert any(ch in "".join(names) for ch in "éèüöäåøßÅÉ")


def test_ratings_follow_the_hidden_tastes(sql, classic, tmp_path):
    source, db = classic
    truth_dir = write_ground_truth(source, tmp_path / "truth")
    truth = pq.read_table(truth_dir / "ratings_truth.parquet").to_pandas()
    loaded = sql.query(db, "SELECT customerNumber, productCode, productRating FROM ratings")
    db_ratings = {(c, p): r for c, p, r in loaded}
    assert db_ratings == {
        (c, p): r
        for c, p, r in truth[["customerNumber", "productCode", "productRating"]].itertuples(index=False)
    }
    # One rating per purchased pair, no more, no less.
    purchased = sql.query(
        db,
        "SELECT COUNT(*) FROM (SELECT DISTINCT o.customerNumber, d.productCode FROM orders o "
        "JOIN orderdetails d USING (orderNumber)) x",
    )[0][0]
    assert purchased == len(db_ratings)
    # Ratings carry the tastes: rank correlation with the noise-free affinity is strong.
    rho = truth[["affinity", "productRating"]].corr(method="spearman").iloc[0, 1]
    assert rho > 0.6
    assert set(truth["productRating"]) == {1, 2, 3, 4, 5}


def test_purchases_follow_line_tastes():
    source = generate(get_preset("prod", 0.01), seed=11)
    tastes = source.truth["customer_tastes"].to_pandas().set_index("customerNumber")
    line_cols = [f"line_pref:{line}" for line in ref.LINE_NAMES]
    lines = (
        source.tables["orderdetails"]
        .to_pandas()
        .merge(source.tables["orders"].to_pandas()[["orderNumber", "customerNumber"]], on="orderNumber")
        .merge(source.tables["products"].to_pandas()[["productCode", "productLine"]], on="productCode")
    )
    bought = lines.groupby(["customerNumber", "productLine"]).size().unstack(fill_value=0)
    bought = bought[bought.sum(axis=1) >= 20]
    favourite = tastes.loc[bought.index, line_cols].to_numpy().argmax(axis=1)
    counts = bought.reindex(columns=list(ref.LINE_NAMES), fill_value=0).to_numpy()
    share_of_favourite = counts[np.arange(len(bought)), favourite] / counts.sum(axis=1)
    overall_share = counts.sum(axis=0) / counts.sum()
    # Without tastes a customer would buy each line at its overall share; tastes lift the favourite.
    assert share_of_favourite.mean() > 1.5 * overall_share[favourite].mean()


def test_spikes_are_in_the_data_as_ground_truth_says():
    preset = get_preset("prod", 0.02)
    source = generate(preset, seed=5)
    hours = source.truth["spike_hours"].to_pandas()
    assert len(source.truth["spikes"]) == preset.spikes == round(150 * 0.02)  # the preset's 150, scaled
    orders = source.tables["orders"].to_pandas()
    lines = source.tables["orderdetails"].to_pandas()[["orderNumber", "productCode"]]
    customers = source.tables["customers"].to_pandas()[["customerNumber", "country"]]
    facts = lines.merge(orders[["orderNumber", "customerNumber", "orderTimestamp"]], on="orderNumber").merge(
        customers, on="customerNumber"
    )
    facts["hour"] = facts["orderTimestamp"].dt.floor("h")
    observed = facts.groupby(["productCode", "country", "hour"]).size()
    for spike_id, spike in hours.groupby("spike_id"):
        rise = spike[spike.phase == "rise"]
        assert 2 <= len(rise) <= 6
        assert list(rise.injected_orders) == sorted(rise.injected_orders) and rise.injected_orders.is_unique
        for row in spike.itertuples():
            seen = observed.get((row.productCode, row.country, row.hour), 0)
            assert seen >= row.injected_orders, (
                f"spike {spike_id} at {row.hour}: {seen} < {row.injected_orders}"
            )
        before = observed.get(
            (spike.productCode.iloc[0], spike.country.iloc[0], spike.hour.min() - timedelta(hours=1)), 0
        )
        assert before < rise.injected_orders.iloc[-1]


def test_read_only_user_cannot_write(sql, reader, mariadb):
    import MySQLdb

    assert sql.query(reader, "SELECT CURRENT_USER()")[0][0].startswith("retail_reader@")
    for statement in (
        "INSERT INTO offices VALUES ('99','x','x','x',NULL,NULL,'x','x','x')",
        "UPDATE customers SET creditLimit = 0",
        "DELETE FROM payments",
        "CREATE TABLE scratch (a int)",
        "DROP TABLE orders",
        "ALTER TABLE products ADD COLUMN x int",
        "TRUNCATE TABLE ratings",
    ):
        with pytest.raises(MySQLdb.OperationalError, match="denied"):
            sql.execute(reader, statement)


def test_refuses_to_overwrite_a_seeded_database(classic):
    source, db = classic
    with pytest.raises(SourceNotEmptyError, match="classicmodels_gen already has tables"):
        load_source(source, db)


def test_from_dump_loads_as_is_and_adds_one_rating_per_purchased_pair(
    sql, mariadb, original, admin, tmp_path
):
    _, db = original
    dump = tmp_path / "classicmodels.sql"
    socket = str(mariadb.socket_path)
    with dump.open("wb") as out:
        subprocess.run(
            [
                "mariadb-dump",
                f"--socket={socket}",
                "--user=root",
                "--databases",
                db.database,
                f"--ignore-table={db.database}.ratings",
                "--skip-dump-date",
            ],
            check=True,
            stdout=out,
        )
    target = admin.with_database("classicmodels_from_dump")
    loaded = load_dump(dump, target, seed=1, replace=True)
    for table in ("customers", "orders", "orderdetails", "payments", "products"):
        assert (
            sql.query(target, f"CHECKSUM TABLE `{table}`")[0][1]
            == sql.query(db, f"CHECKSUM TABLE `{table}`")[0][1]
        )
    pairs = sql.query(
        target,
        "SELECT COUNT(*) FROM (SELECT DISTINCT o.customerNumber, d.productCode FROM orders o "
        "JOIN orderdetails d USING (orderNumber)) x",
    )[0][0]
    assert loaded.metadata["row_counts"]["ratings"] == pairs
    assert (
        sql.query(target, "SELECT COUNT(*) FROM ratings WHERE productRating NOT BETWEEN 1 AND 5")[0][0] == 0
    )
    assert _columns(sql, target, target.database) == V31_COLUMNS
    assert loaded.truth["ratings_truth"].num_rows == pairs


@pytest.mark.parametrize("fixture", ["classic", "original"])
def test_live_mode_inserts_and_ships_orders_now(sql, request, fixture, admin):
    _, db = request.getfixturevalue(fixture)
    before = sql.query(db, "SELECT COUNT(*), MAX(orderNumber) FROM orders")[0]
    stats = run_live(db, rate_per_s=20, duration_s=1.5, tick_s=0.5, seed=1)
    after = sql.query(db, "SELECT COUNT(*), MAX(orderNumber) FROM orders")[0]
    assert stats.orders_inserted > 0 and after[0] == before[0] + stats.orders_inserted
    assert after[1] == before[1] + stats.orders_inserted
    new = sql.query(db, "SELECT orderDate, status FROM orders WHERE orderNumber > %s", (before[1],))
    assert {row[0] for row in new} <= {stats.last_order_timestamp.date()}
    assert stats.orders_shipped > 0
    assert (
        sql.query(db, "SELECT COUNT(*) FROM orders WHERE status = 'Shipped' AND shippedDate = CURDATE()")[0][
            0
        ]
        > 0
    )
    if fixture == "classic":
        newest = sql.query(db, "SELECT MAX(orderTimestamp), MAX(updated_at) FROM orders")[0]
        assert abs((newest[0] - stats.last_order_timestamp.replace(microsecond=0)).total_seconds()) <= 1
        assert newest[1] >= newest[0]


# ---------------------------------------------------------------------- a calendar that ends now
def _time_columns(source) -> dict[tuple[str, str], object]:
    import pyarrow as pa

    return {
        (name, field.name): table.column(field.name)
        for name, table in source.tables.items()
        for field in table.schema
        if pa.types.is_timestamp(field.type) or pa.types.is_date32(field.type)
    }


def test_a_calendar_ending_now_is_the_same_store_shifted():
    """`ends_at` moves the calendar and nothing else: the same rows for a seed, each timestamp
    before the last hour moved by the same whole hours, nothing after the end, dates that agree
    with the timestamps."""
    from datetime import datetime

    import pyarrow.compute as pc

    preset = get_preset("classic")
    first_end = datetime(2026, 12, 6, 21, 40, 12)
    first = generate(preset, seed=7, ends_at=first_end)
    later = generate(preset, seed=7, ends_at=first_end + timedelta(hours=5, minutes=17))
    published = generate(preset, seed=7)
    for name in ("customers", "products", "orders", "orderdetails"):  # the preset's sizes
        assert first.tables[name].num_rows == published.tables[name].num_rows, name
    for name, table in first.tables.items():
        times = [f.name for f in table.schema if f.name in {c for (_, c) in _time_columns(first)}]
        assert table.drop_columns(times).equals(later.tables[name].drop_columns(times)), name
    a = first.tables["orders"].column("orderTimestamp").to_numpy()
    b = later.tables["orders"].column("orderTimestamp").to_numpy()
    before_last_hour = a < np.datetime64("2026-12-06T21:00:00")
    assert before_last_hour.sum() > 300 and set(b[before_last_hour] - a[before_last_hour]) == {
        np.timedelta64(5 * 3600, "s")
    }
    for (name, column), values in _time_columns(first).items():
        if column != "requiredDate":  # a due date may lie ahead
            newest = pc.max(values).as_py()
            newest = newest if isinstance(newest, datetime) else datetime.combine(newest, datetime.min.time())
            assert newest <= first_end, f"{name}.{column} goes past the end: {newest}"
    orders = first.tables["orders"].to_pandas()
    assert (orders.orderTimestamp.dt.date == orders.orderDate).all()
    assert orders.orderTimestamp.max() >= first_end - timedelta(hours=1)
    assert published.tables["orders"].column("orderDate").to_numpy().max() == np.datetime64(preset.end)


def test_a_spike_rises_through_the_last_hours_when_the_calendar_ends_now():
    from datetime import datetime

    ends_at = datetime(2026, 12, 6, 21, 40, 12)
    source = generate(get_preset("classic"), seed=7, ends_at=ends_at)
    spikes = source.truth["spikes"].to_pylist()
    (now,) = [
        s
        for s in spikes
        if s["start_hour"] + timedelta(hours=s["rise_hours"] - 1) == datetime(2026, 12, 6, 21)
    ]
    assert now["decay_hours"] == 0 and now["base_orders"] >= 2 and now["rise_hours"] >= 4
    orders = source.tables["orders"].to_pandas()
    lines = source.tables["orderdetails"].to_pandas()
    customers = source.tables["customers"].to_pandas()
    facts = lines.merge(orders, on="orderNumber").merge(
        customers[["customerNumber", "country"]], on="customerNumber"
    )
    mine = facts[(facts.productCode == now["productCode"]) & (facts.country == now["country"])]
    per_hour = mine.groupby(mine.orderTimestamp.dt.floor("h")).size()
    hours = [now["start_hour"] + timedelta(hours=k) for k in range(now["rise_hours"])]
    counts = [int(per_hour.get(h, 0)) for h in hours]
    assert counts == sorted(set(counts)) and counts[-1] >= 8, counts  # rising every hour, to now
    # The published calendar has no spike at its end.
    published = generate(get_preset("classic"), seed=7).truth["spikes"].to_pylist()
    assert all(s["start_hour"].date() < get_preset("classic").end for s in published)


def test_live_spikes_rise_hour_by_hour_on_the_source(sql, classic, tmp_path):
    """`retail live --spike-every`: a spike starts at once, its orders of one product from one
    country rising each hour of the store's clock (two hours played in a few seconds)."""
    from datetime import datetime

    from retail_platform.sandbox.generator.live import SimulatedClock, read_live_spikes

    _, db = classic
    start = datetime(2026, 12, 6, 9, 10)  # hour 9 lasts 1.3 s of wall time: room for a slow start
    stats = run_live(
        db, rate_per_s=2, duration_s=4, tick_s=0.25, seed=3, truth_dir=tmp_path,
        spike_every=timedelta(hours=1), clock=SimulatedClock(start, speed=2.5 * 3600 / 4),
    )  # fmt: skip
    spikes = read_live_spikes(tmp_path)
    assert stats.spikes_started == len(spikes) >= 2  # at once, then an hour later
    first = spikes[0]
    rows = sql.query(
        db,
        "SELECT HOUR(o.orderTimestamp), COUNT(*) FROM orders o JOIN orderdetails d USING (orderNumber) "
        "JOIN customers c USING (customerNumber) WHERE d.productCode = %s AND c.country = %s "
        "AND o.orderTimestamp >= %s GROUP BY 1 ORDER BY 1",
        (first["product_code"], first["country"], start),
    )
    counts = dict(rows)
    expected = first["orders_per_hour"]
    assert [counts.get(h, 0) >= n for h, n in zip((9, 10, 11), expected, strict=True)] == [True, True, True]
    assert counts.get(9, 0) < counts.get(10, 0) < counts.get(11, 0), counts
    ((drift,),) = sql.query(
        db,
        "SELECT MAX(ABS(TIMESTAMPDIFF(SECOND, o.orderTimestamp, d.updated_at))) FROM orders o "
        "JOIN orderdetails d USING (orderNumber) WHERE o.orderTimestamp BETWEEN %s AND %s",
        (start, start + timedelta(hours=3)),
    )
    assert drift <= 1, "updated_at (the extraction's cursor) must follow the store's clock"


def test_a_stale_source_is_topped_up_to_now_keeping_every_row(sql, admin, reader, mariadb, tmp_path):
    """A rerun of `./platform run` a day later: the source seeded with a calendar that ended 26 hours
    ago is brought to now. Every row it held is unchanged, new orders come after its last write (so
    the extraction's watermarks pick them up: the lake then holds every source row), a spike rises
    through the last hours to now in the ground truth, and a second top-up finds nothing to do."""
    from datetime import UTC, datetime

    from retail_platform.contract.model import load_contract
    from retail_platform.extract.local_engine import extract_batch
    from retail_platform.extract.plan import plan_extraction
    from retail_platform.lake.batches import RawLake
    from retail_platform.lake.storage import LakeStorage
    from retail_platform.sandbox.generator.live import read_live_spikes
    from retail_platform.sandbox.generator.topup import top_up
    from retail_platform.source.introspect import read_live_schema

    seeded_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(hours=26)
    db = admin.with_database("classicmodels_stale")
    load_source(generate(get_preset("classic"), seed=7, ends_at=seeded_at), db, replace=True)
    mariadb.grant_reader(db.database)
    source = reader.with_database(db.database)
    contract = load_contract(
        Path(__file__).resolve().parents[1] / "include" / "contracts" / "classicmodels.yml"
    )
    lake = RawLake(LakeStorage.from_uri(str(tmp_path / "lake")), "classicmodels")

    def extract(start, end):
        plans = plan_extraction(contract, read_live_schema(source), interval_start=start, interval_end=end)
        for plan in plans:
            extract_batch(plan, reader=source, lake=lake)

    def snapshot():
        return {t: set(sql.query(db, f"SELECT * FROM `{t}`")) for t in V31_COLUMNS}

    extract(
        (seeded_at - timedelta(hours=1)).replace(tzinfo=UTC),
        (seeded_at + timedelta(minutes=1)).replace(tzinfo=UTC),
    )
    before = snapshot()
    result = top_up(db, truth_dir=tmp_path, seed=5)
    after = snapshot()
    now = result.now

    assert result.skipped is None and result.orders > 0, result.describe()
    for table, rows in before.items():
        assert rows <= after[table], f"{table}: a row held before the top-up changed or vanished"
    assert len(after["orders"]) - len(before["orders"]) == result.orders
    assert len(after["orderdetails"]) - len(before["orderdetails"]) == result.lines
    ((first_new, newest, newest_update),) = sql.query(
        db,
        "SELECT MIN(orderTimestamp), MAX(orderTimestamp), MAX(updated_at) FROM orders WHERE orderNumber > %s",
        (max(r[0] for r in before["orders"]),),
    )
    assert result.newest_write < first_new and newest <= now and newest_update <= now + timedelta(seconds=1)
    assert newest >= now.replace(minute=0, second=0), "the data ends in the current hour"

    (spike,) = read_live_spikes(tmp_path)
    hours = [datetime.fromisoformat(spike["start_hour"]) + timedelta(hours=k) for k in range(4)]
    assert len(spike["orders_per_hour"]) == 4 and hours[-1] == now.replace(minute=0, second=0)
    counts = dict(
        sql.query(
            db,
            "SELECT TIMESTAMP(DATE_FORMAT(o.orderTimestamp, '%%Y-%%m-%%d %%H:00:00')), COUNT(*) FROM orders o "
            "JOIN orderdetails d USING (orderNumber) JOIN customers c USING (customerNumber) "
            "WHERE d.productCode = %s AND c.country = %s AND o.orderTimestamp > %s GROUP BY 1",
            (spike["product_code"], spike["country"], result.newest_write),
        )
    )
    per_hour = [counts.get(h, 0) for h in hours]
    assert all(n >= want for n, want in zip(per_hour, spike["orders_per_hour"], strict=True)), per_hour
    assert per_hour == sorted(set(per_hour)) and spike["orders_per_hour"][0] >= 2, per_hour  # rising to now

    current = now.replace(minute=0, second=0).replace(tzinfo=UTC)
    extract(current, current + timedelta(hours=1))  # the rerun's extraction, up to now
    for table, key in (("orders", ["orderNumber"]), ("orderdetails", ["orderNumber", "productCode"])):
        in_lake = {tuple(r[k] for k in key) for r in lake.read_table(table).to_pylist()}
        in_source = set(sql.query(db, f"SELECT {', '.join(key)} FROM `{table}`"))
        assert in_lake == in_source, f"{table}: the extraction missed {len(in_source - in_lake)} rows"

    again = top_up(db, truth_dir=tmp_path, seed=5)
    assert again.orders == 0 and "current" in again.skipped


def test_retail_generate_ends_now_shifts_the_calendar_to_now(
    sql, admin, mariadb, monkeypatch, tmp_path, capsys
):
    """`retail generate --ends-now` seeds as `./platform run` does (the data ends now, a spike rising
    through the last hours in the ground truth); without it the preset's own dates are kept."""
    import json
    from datetime import UTC, datetime

    from retail_platform import cli
    from retail_platform.connections import conn_env_var
    from retail_platform.sandbox.settings import ADMIN_CONN_ID

    db = admin.with_database("classicmodels_cli")
    monkeypatch.setenv(conn_env_var(ADMIN_CONN_ID), db.url())
    argv = ["generate", "--scale", "0.3", "--replace", "--truth-dir", str(tmp_path)]
    assert cli.main([*argv, "--ends-now"]) == 0
    summary = json.loads(capsys.readouterr().out)
    ends_at = datetime.fromisoformat(summary["calendar"]["ends_at"])
    assert abs(ends_at - datetime.now(UTC).replace(tzinfo=None)) < timedelta(minutes=5)
    ((newest,),) = sql.query(db, "SELECT MAX(orderTimestamp) FROM orders")
    current_hour = ends_at.replace(minute=0, second=0)
    assert current_hour <= newest <= ends_at
    spikes = pq.read_table(tmp_path / "spikes.parquet").to_pylist()
    assert any(s["start_hour"] + timedelta(hours=s["rise_hours"] - 1) == current_hour for s in spikes)

    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["calendar"] == "preset"
    assert sql.query(db, "SELECT MAX(orderDate) FROM orders")[0][0] == get_preset("classic").end
