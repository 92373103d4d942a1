"""Play the production store: keep inserting new orders and updating some, in real time.

Each tick inserts a Poisson number of orders stamped with the current time (with their
lines, and a rating for each newly purchased pair), ships some orders that are in
process (status, shippedDate, a payment), and commits. It runs on both schema
variants: ``orderTimestamp`` and ``updated_at`` are filled only where they exist.

The orders follow the source's mix: customers are drawn by their share of the order lines the
source holds, products by theirs. Only the volume is the live rate's (``up --live 1`` plays a store
about 240,000 times busier than the classic history); were the mix other than the history's, every
product × country that the live store favours would rise out of its share of the store's orders,
which the warehouse's spike rule judges it by, and look like a spike.

With ``spike_every`` a demand spike starts every so often (see ``LiveSpikes``): one product's
orders from one country rise hour by hour, as the warehouse's spike rule looks for. Each spike is
written as ground truth (``live_spikes.jsonl`` beside the generator's truth) when it starts, so a
measurement can time "spike start → alert → dashboard".
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
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
    spikes_started: int = 0
    spike_orders: int = 0


Clock = Callable[[], datetime]
LIVE_SPIKES_FILE = "live_spikes.jsonl"
MAX_LINES_PER_ORDER = 6  # tick() draws 1..max lines an order, uniformly


def utc_clock() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class LiveSpike:
    """A spike the live store plays: ``orders_per_hour[k]`` orders of the product from customers of
    the country in the k-th clock hour from the start's hour, each hour's orders placed at its first
    tick (the rule reads whole hours: the spike can be seen from the start of its second hour)."""

    spike_id: str
    product_code: str
    country: str
    started_at: datetime
    orders_per_hour: list[int]
    inserted: dict[int, int] = field(default_factory=dict)

    @property
    def start_hour(self) -> datetime:
        return self.started_at.replace(minute=0, second=0, microsecond=0)

    def due(self, now: datetime) -> int:
        """Orders to place now: what the current hour should have minus what it has."""
        k = int((now.replace(minute=0, second=0, microsecond=0) - self.start_hour) / timedelta(hours=1))
        if not 0 <= k < len(self.orders_per_hour):
            return 0
        return max(0, self.orders_per_hour[k] - self.inserted.get(k, 0))

    def record(self, now: datetime, count: int) -> None:
        k = int((now.replace(minute=0, second=0, microsecond=0) - self.start_hour) / timedelta(hours=1))
        self.inserted[k] = self.inserted.get(k, 0) + count

    def finished(self, now: datetime) -> bool:
        return now >= self.start_hour + timedelta(hours=len(self.orders_per_hour))

    def truth(self) -> dict:
        doc = asdict(self)
        doc.pop("inserted")
        return doc | {"started_at": self.started_at.isoformat(), "start_hour": self.start_hour.isoformat()}


class LiveStore:
    def __init__(
        self,
        admin: MySQLConnectionInfo,
        *,
        seed: int | None = None,
        truth_dir: Path | None = None,
        clock: Clock = utc_clock,
        max_lines: int = MAX_LINES_PER_ORDER,
    ):
        self.admin = admin
        self.clock = clock
        self.max_lines = max_lines
        self.rng = np.random.default_rng(seed)
        self.conn = connect(admin, autocommit=False)
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s",
                (admin.database,),
            )
            self.columns = {(t, c) for t, c in cur.fetchall()}
            cur.execute(
                "SELECT customerNumber, country FROM customers WHERE creditLimit > 0 ORDER BY customerNumber"
            )
            buyers = cur.fetchall()
            self.customers = np.array([r[0] for r in buyers])
            self.countries = np.array([r[1] for r in buyers])
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
        self.buyer_weights = np.ones(len(self.customers))
        self._follow_the_source_mix()

    def _follow_the_source_mix(self) -> None:
        """Weigh customers and products by their order lines in the source, where it has any (see
        the module's docstring), counted as the warehouse counts demand: cancelled orders left out. A
        customer or product without any is then never drawn (its share, what the spike rule expects
        of it, is 0)."""
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT o.customerNumber, d.productCode, COUNT(*) FROM orders o "
                "JOIN orderdetails d USING (orderNumber) WHERE o.status <> 'Cancelled' "
                "GROUP BY o.customerNumber, d.productCode"
            )
            by_customer, by_product = Counter(), Counter()
            for customer, product, lines in cur.fetchall():
                by_customer[int(customer)] += lines
                by_product[product] += lines
        self.conn.commit()  # end the read's transaction: ticks see the store as it is then
        buyers = np.array([by_customer.get(int(c), 0) for c in self.customers], dtype=float)
        products = np.array([by_product.get(p, 0) for p in self.products], dtype=float)
        if buyers.sum() > 0 and products.sum() > 0:
            self.buyer_weights, self.popularity = buyers, products

    @property
    def mean_lines(self) -> float:
        """Lines an ordinary order has on average."""
        return (1 + self.max_lines) / 2

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

    def tick(
        self,
        n_orders: int,
        n_ship: int,
        stats: LiveStats,
        spike_orders: list[tuple[int, int]] = (),
        now: datetime | None = None,
    ) -> None:
        """One commit: ``n_orders`` ordinary orders, ``spike_orders`` (customer, product index)
        orders of one line each, ``n_ship`` orders shipped."""
        now = now or self.clock()
        has_ts = ("orders", "orderTimestamp") in self.columns
        with self.conn.cursor() as cur:
            if self.clock is not utc_clock:
                # `updated_at` (DEFAULT / ON UPDATE CURRENT_TIMESTAMP) follows the store's clock too.
                cur.execute("SET timestamp = %s", ((now - datetime(1970, 1, 1)).total_seconds(),))
            cur.execute("SELECT COALESCE(MAX(orderNumber), 10099) FROM orders FOR UPDATE")
            next_number = cur.fetchone()[0] + 1
            p = self.popularity / self.popularity.sum()
            buyer_p = self.buyer_weights / self.buyer_weights.sum()
            for i, spike_order in enumerate([*[None] * n_orders, *spike_orders]):
                number = next_number + i
                if spike_order is None:
                    customer, spike_product = int(self.rng.choice(self.customers, p=buyer_p)), None
                else:
                    customer, spike_product = spike_order
                cols = ["orderNumber", "orderDate", "requiredDate", "status", "customerNumber"]
                vals = [number, now.date(), now.date(), "In Process", customer]
                if has_ts:
                    cols.append("orderTimestamp")
                    vals.append(now.replace(microsecond=0))
                cur.execute(
                    f"INSERT INTO orders ({', '.join(f'`{c}`' for c in cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                    vals,
                )
                if spike_product is None:
                    k = int(self.rng.integers(1, self.max_lines + 1))
                    picks = self.rng.choice(
                        len(self.products), size=min(k, int(np.count_nonzero(p))), replace=False, p=p
                    )
                else:
                    picks = [spike_product]
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
            stats.orders_inserted += n_orders + len(spike_orders)
            stats.spike_orders += len(spike_orders)
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
        if n_orders or spike_orders:
            stats.last_order_timestamp = now

    def close(self) -> None:
        self.conn.close()


class SimulatedClock:
    """Time that starts at ``start`` and runs ``speed`` times faster than the wall clock (tests and
    demonstrations play hours of a live store in seconds)."""

    def __init__(self, start: datetime, speed: float):
        self.start, self.speed, self._t0 = start, speed, time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)


class LiveSpikes:
    """Starts a spike every ``every`` of the store's clock (the first at once) and hands the store
    the spike orders due at each tick. A spike's hourly orders start at twice the product's usual
    hourly orders in that country at ``rate_per_s`` (orders a second of the store's clock; at least
    2), so it stands out of the live orders as the warehouse's rule requires (rising, at least 3×
    the usual level)."""

    def __init__(
        self,
        store: LiveStore,
        *,
        every: timedelta,
        rate_per_s: float,
        rise_hours: int = 3,
        truth_file: Path | None = None,
        id_prefix: str = "live",
    ):
        self.store, self.every, self.rate_per_s, self.rise_hours = store, every, rate_per_s, rise_hours
        self.truth_file, self.id_prefix = truth_file, id_prefix
        self.active: list[LiveSpike] = []
        self.next_start: datetime | None = None
        self.countries = sorted({c for c in store.countries if (store.countries == c).sum() >= 2})

    def due_orders(self, now: datetime, stats: LiveStats) -> list[tuple[int, int]]:
        if self.countries and (self.next_start is None or now >= self.next_start):
            self.active.append(self.start(now))
            stats.spikes_started += 1
            self.next_start = now + self.every
        orders = []
        for spike in self.active:
            count = spike.due(now)
            if count:
                buyers = self.store.customers[self.store.countries == spike.country]
                product = self.store.products.index(spike.product_code)
                orders += [(int(c), product) for c in self.store.rng.choice(buyers, size=count)]
                spike.record(now, count)
        self.active = [s for s in self.active if not s.finished(now)]
        return orders

    def start(self, now: datetime) -> LiveSpike:
        """A new spike starting at ``now``, written to the ground truth."""
        rng, store = self.store.rng, self.store
        busy = {(s.product_code, s.country) for s in self.active}
        while True:
            product = int(rng.integers(len(store.products)))
            country = str(rng.choice(self.countries))
            if (store.products[product], country) not in busy:
                break
        share = store.buyer_weights[store.countries == country].sum() / store.buyer_weights.sum()
        popularity = store.popularity[product] / store.popularity.sum()
        usual = self.rate_per_s * 3600 * store.mean_lines * popularity * share
        base = max(2, math.ceil(2 * usual))
        spike = LiveSpike(
            spike_id=f"{self.id_prefix}-{now:%Y%m%dT%H%M%S}-{store.products[product]}-{country}",
            product_code=store.products[product],
            country=country,
            started_at=now.replace(microsecond=0),
            orders_per_hour=[base * (k + 1) for k in range(self.rise_hours)],
        )
        if self.truth_file is not None:
            self.truth_file.parent.mkdir(parents=True, exist_ok=True)
            with self.truth_file.open("a") as out:
                out.write(json.dumps(spike.truth()) + "\n")
        log.info(
            "live spike started: %s in %s, %s orders an hour",
            spike.product_code,
            country,
            spike.orders_per_hour,
        )
        return spike


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
    spike_every: timedelta | None = None,
    clock: Clock = utc_clock,
) -> LiveStats:
    """Insert ~rate_per_s orders a second until duration_s passes or stop is set; with
    ``spike_every``, a demand spike starts at once and then every so often (clock time)."""
    store = LiveStore(admin, seed=seed, truth_dir=truth_dir, clock=clock)
    stats = LiveStats()
    stop = stop or threading.Event()
    spikes = None
    if spike_every is not None:
        truth_file = None if truth_dir is None else truth_dir / LIVE_SPIKES_FILE
        # The usual level a spike must stand out of, in orders per hour of the store's clock.
        per_clock_s = rate_per_s / getattr(clock, "speed", 1.0)
        spikes = LiveSpikes(store, every=spike_every, rate_per_s=per_clock_s, truth_file=truth_file)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            started = time.monotonic()
            n_orders = int(store.rng.poisson(rate_per_s * tick_s))
            n_ship = int(store.rng.binomial(n_orders, ship_fraction)) if n_orders else 0
            now = clock()
            spike_orders = [] if spikes is None else spikes.due_orders(now, stats)
            store.tick(n_orders, n_ship, stats, spike_orders, now=now)
            stop.wait(max(0.0, tick_s - (time.monotonic() - started)))
    finally:
        store.close()
    log.info(
        "live: %d orders, %d lines, %d shipped, %d ratings, %d spikes started",
        stats.orders_inserted,
        stats.lines_inserted,
        stats.orders_shipped,
        stats.ratings_inserted,
        stats.spikes_started,
    )
    return stats


def read_live_spikes(truth_dir: Path) -> list[dict]:
    """The spikes the live store started (ground truth), oldest first."""
    path = truth_dir / LIVE_SPIKES_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
