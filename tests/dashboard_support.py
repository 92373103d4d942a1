"""Test data for the dashboard and spike-alert tests: a demand spike happening now, and a warehouse
built and published from the source the way the transform DAG does it."""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from retail_platform.contract.model import load_contract
from retail_platform.extract.local_engine import extract_batch
from retail_platform.extract.plan import plan_extraction
from retail_platform.lake.batches import RawLake
from retail_platform.lake.storage import LakeStorage
from retail_platform.settings import Settings
from retail_platform.source.connection import MySQLConnectionInfo, connect
from retail_platform.source.introspect import read_live_schema
from retail_platform.warehouse.transform import build_and_publish

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class InjectedSpike:
    product_code: str
    country: str
    first_hour: datetime
    orders_per_hour: tuple[int, ...]


def inject_current_spike(
    admin: MySQLConnectionInfo,
    *,
    end: datetime,
    orders_per_hour: tuple[int, ...] = (2, 4, 6),
    background_hours: int = 48,
) -> InjectedSpike:
    """Orders of one product from one country, rising hour by hour up to ``end`` (naive UTC, the
    start of the current hour): the newest orders in the source, so the spike is still rising. Around
    it, ``background_hours`` of ordinary demand: a few orders an hour of other products, never two of
    one product from one country in an hour (so no other spike)."""
    conn = connect(admin)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT country, MIN(customerNumber) FROM customers WHERE creditLimit > 0 "
                "GROUP BY country ORDER BY COUNT(*) DESC, country LIMIT 1"
            )
            country, customer = cur.fetchone()
            cur.execute("SELECT productCode, MSRP FROM products ORDER BY productCode")
            products = cur.fetchall()
            cur.execute("SELECT customerNumber FROM customers WHERE creditLimit > 0 ORDER BY customerNumber")
            customers = [row[0] for row in cur.fetchall()]
            cur.execute("SELECT COALESCE(MAX(orderNumber), 10099) + 1 FROM orders")
            number = cur.fetchone()[0]
            first_hour = end - timedelta(hours=len(orders_per_hour))
            orders = [
                (first_hour + timedelta(hours=offset, minutes=5 + 5 * k), customer, products[0])
                for offset, count in enumerate(orders_per_hour)
                for k in range(count)
            ]
            orders += _background_orders(end, background_hours, customers, products[1:])
            for ts, buyer, (product, msrp) in sorted(orders):
                _insert_order(cur, number, ts, buyer, product, msrp)
                number += 1
        conn.commit()
    finally:
        conn.close()
    return InjectedSpike(products[0][0], country, first_hour, orders_per_hour)


def _background_orders(end: datetime, hours: int, customers: list, products: list) -> list[tuple]:
    rng = random.Random(7)
    orders = []
    for hour in range(hours, 0, -1):
        start = end - timedelta(hours=hour)
        for k, product in enumerate(rng.sample(products, 3)):  # distinct products within the hour
            orders.append((start + timedelta(minutes=10 + 15 * k), rng.choice(customers), product))
    return orders


def _insert_order(cur, number: int, ts: datetime, customer: int, product: str, msrp) -> None:
    cur.execute(
        "INSERT INTO orders (orderNumber, orderDate, requiredDate, status, customerNumber, "
        "orderTimestamp, updated_at) VALUES (%s, %s, %s, 'In Process', %s, %s, %s)",
        (number, ts.date(), ts.date() + timedelta(days=7), customer, ts, ts),
    )
    cur.execute(
        "INSERT INTO orderdetails (orderNumber, productCode, quantityOrdered, priceEach, "
        "orderLineNumber, updated_at) VALUES (%s, %s, 10, %s, 1, %s)",
        (number, product, round(float(msrp) * 0.9, 2), ts),
    )


def build_published_warehouse(reader: MySQLConnectionInfo, *, end: datetime) -> Settings:
    """Extract every table into the lake (one batch up to ``end``) and build, test and publish the
    warehouse with dbt, as the DAGs do; the environment names the lake and the warehouse."""
    contract = load_contract(ROOT / "include" / "contracts" / "classicmodels.yml")
    settings = Settings.from_env()
    lake = RawLake(LakeStorage.from_uri(settings.lake_uri), contract.source.name)
    for plan in plan_extraction(
        contract, read_live_schema(reader), interval_start=end - timedelta(hours=1), interval_end=end
    ):
        extract_batch(plan, reader=reader, lake=lake)
    build_and_publish(settings)
    return settings


class SlackReceiver:
    """A real HTTP server standing in for marketing's Slack incoming webhook."""

    def __init__(self):
        self.messages: list[dict] = []
        received = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0MKT/B0MKT/marketingsecret"

    def connection(self) -> str:
        return json.dumps({"conn_type": "slackwebhook", "password": self.url})
