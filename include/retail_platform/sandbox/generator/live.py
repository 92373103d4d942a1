"""Play the production store: keep inserting new orders and updating some, in real time.

Each tick inserts a Poisson number of orders stamped with the current time (with their
lines, and a rating for each newly purchased pair), ships some orders that are in
process (status, shippedDate, a payment), and commits. It runs on both schema
variants: ``orderTimestamp`` and ``updated_at`` are filled only where they exist.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from retail_platform.source.connection import MySQLConnectionInfo, connect

log = logging.getLogger(__name__)


@dataclass
class LiveStats:
    orders_inserted: int = 0
    lines_inserted: int = 0
    orders_shipped: int = 0
    ratings_inserted: int = 0
    last_order_timestamp: datetime | None = None
    inserted_order_numbers: list[int] = field(default_factory=list)


class LiveStore:
    def __init__(self, admin: MySQLConnectionInfo, *, seed: int | None = None, truth_dir: Path | None = None):
        self.admin = admin
        self.rng = np.random.default_rng(seed)
        self.conn = connect(admin, autocommit=False)
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s",
                (admin.database,),
            )
            self.columns = {(t, c) for t, c in cur.fetchall()}
            cur.execute("SELECT customerNumber FROM customers WHERE creditLimit > 0 ORDER BY customerNumber")
            self.customers = np.array([r[0] for r in cur.fetchall()])
            cur.execute("SELECT productCode, MSRP FROM products ORDER BY productCode")
            rows = cur.fetchall()
        if len(self.customers) == 0 or not rows:
            raise RuntimeError(
                f"live mode needs customers and products in {admin.database}: generate the source first"
            )
        self.products = [r[0] for r in rows]
        self.msrp_cents = np.array([int(r[1] * 100) for r in rows])
        self.popularity = np.ones(len(self.products))
        self.rating_model = self._rating_model(truth_dir)

    def _rating_model(self, truth_dir: Path | None):
        """Rate new purchases with the generation's hidden tastes when its ground truth is at hand."""
        if truth_dir is None or not (truth_dir / "customer_tastes.parquet").exists():
            return None
        tastes = pq.read_table(truth_dir / "customer_tastes.parquet").to_pandas().set_index("customerNumber")
        attrs = pq.read_table(truth_dir / "product_attributes.parquet").to_pandas().set_index("productCode")
        effects = pq.read_table(truth_dir / "region_line_effects.parquet").to_pandas()
        region = {(r.territory, r.productLine): r.effect for r in effects.itertuples()}
        meta = json.loads((truth_dir / "generation.json").read_text())
        if "popularity" in attrs.columns:
            self.popularity = attrs.reindex(self.products)["popularity"].fillna(1.0).to_numpy()
        return tastes, attrs, region, np.array(meta["rating_thresholds"])

    def _rate(self, customer: int, product: str) -> int:
        if self.rating_model is None:
            return int(self.rng.choice([1, 2, 3, 4, 5], p=[0.06, 0.1, 0.24, 0.32, 0.28]))
        tastes, attrs, region, thresholds = self.rating_model
        if customer not in tastes.index or product not in attrs.index:
            return 3
        t, a = tastes.loc[customer], attrs.loc[product]
        affinity = (
            t[f"line_pref:{a.productLine}"]
            + region.get((t.territory, a.productLine), 0.0)
            + t[f"scale_pref:{a.productScale}"]
            + t[f"vendor_pref:{a.productVendor}"]
            + a.quality
        )
        return int(1 + np.searchsorted(thresholds, affinity + self.rng.normal(0, 0.6)))

    def tick(self, n_orders: int, n_ship: int, stats: LiveStats) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        has_ts = ("orders", "orderTimestamp") in self.columns
        with self.conn.cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(orderNumber), 10099) FROM orders FOR UPDATE")
            next_number = cur.fetchone()[0] + 1
            p = self.popularity / self.popularity.sum()
            for i in range(n_orders):
                number = next_number + i
                customer = int(self.rng.choice(self.customers))
                cols = ["orderNumber", "orderDate", "requiredDate", "status", "customerNumber"]
                vals = [number, now.date(), now.date(), "In Process", customer]
                if has_ts:
                    cols.append("orderTimestamp")
                    vals.append(now.replace(microsecond=0))
                cur.execute(
                    f"INSERT INTO orders ({', '.join(f'`{c}`' for c in cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                    vals,
                )
                k = int(self.rng.integers(1, 7))
                picks = self.rng.choice(
                    len(self.products), size=min(k, len(self.products)), replace=False, p=p
                )
                lines = [
                    (
                        number,
                        self.products[j],
                        int(self.rng.integers(10, 60)),
                        int(self.msrp_cents[j] * self.rng.uniform(0.75, 1.0)) / 100,
                        n + 1,
                    )
                    for n, j in enumerate(picks)
                ]
                cur.executemany(
                    "INSERT INTO orderdetails (orderNumber, productCode, quantityOrdered, priceEach, orderLineNumber)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    lines,
                )
                ratings = [(customer, line[1], self._rate(customer, line[1])) for line in lines]
                cur.executemany(
                    "INSERT IGNORE INTO ratings (customerNumber, productCode, productRating) VALUES (%s, %s, %s)",
                    ratings,
                )
                stats.ratings_inserted += cur.rowcount
                stats.lines_inserted += len(lines)
                stats.inserted_order_numbers.append(number)
            stats.orders_inserted += n_orders
            if n_ship:
                cur.execute(
                    "SELECT o.orderNumber, o.customerNumber, SUM(d.quantityOrdered * d.priceEach) "
                    "FROM orders o JOIN orderdetails d USING (orderNumber) "
                    "WHERE o.status = 'In Process' GROUP BY o.orderNumber, o.customerNumber "
                    "ORDER BY o.orderNumber LIMIT %s",
                    (n_ship,),
                )
                for number, customer, total in cur.fetchall():
                    cur.execute(
                        "UPDATE orders SET status = 'Shipped', shippedDate = %s WHERE orderNumber = %s",
                        (now.date(), number),
                    )
                    cur.execute(
                        "INSERT IGNORE INTO payments (customerNumber, checkNumber, paymentDate, amount) "
                        "VALUES (%s, %s, %s, %s)",
                        (customer, f"LV{number:08d}", now.date(), total),
                    )
                    stats.orders_shipped += 1
        self.conn.commit()
        if n_orders:
            stats.last_order_timestamp = now

    def close(self) -> None:
        self.conn.close()


def run_live(
    admin: MySQLConnectionInfo,
    *,
    rate_per_s: float = 2.0,
    duration_s: float | None = 60.0,
    ship_fraction: float = 0.3,
    tick_s: float = 1.0,
    seed: int | None = None,
    truth_dir: Path | None = None,
    stop: threading.Event | None = None,
) -> LiveStats:
    """Insert ~rate_per_s orders a second until duration_s passes or stop is set."""
    store = LiveStore(admin, seed=seed, truth_dir=truth_dir)
    stats = LiveStats()
    stop = stop or threading.Event()
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            started = time.monotonic()
            n_orders = int(store.rng.poisson(rate_per_s * tick_s))
            n_ship = int(store.rng.binomial(n_orders, ship_fraction)) if n_orders else 0
            store.tick(n_orders, n_ship, stats)
            stop.wait(max(0.0, tick_s - (time.monotonic() - started)))
    finally:
        store.close()
    log.info(
        "live: %d orders, %d lines, %d shipped, %d ratings",
        stats.orders_inserted,
        stats.lines_inserted,
        stats.orders_shipped,
        stats.ratings_inserted,
    )
    return stats
