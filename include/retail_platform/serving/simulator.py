"""A shopper simulator: puts realistic events on the events stream, as the sales platform would.

Known customers (with their own city, country and credit limit) and new ones (customer numbers the
model never saw, features borrowed from a real customer's region), browse sessions of one to six
products from the catalogue (ordered or not), some put in the cart, and a share of malformed events of
every kind (bad JSON, missing or wrongly typed fields, absurd quantities, oversized). A product the
catalogue does not know is not malformed: it is in no event here, the tests send it.

``retail shoppers --rate N --duration S [--malformed 0.02] [--new-customers 0.2] [--seed N]``: the
customers and products come from the newest export of the training table in the lake.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field

from retail_platform.serving.settings import ServingSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Customer:
    customer_number: int
    city: str | None
    country: str | None
    credit_limit: float | None


@dataclass(frozen=True)
class Catalogue:
    customers: tuple[Customer, ...]
    product_codes: tuple[str, ...]

    @classmethod
    def from_training_table(cls, table, products=None) -> Catalogue:
        """Customers from the training table; products from ``products`` (the build's ``dim_products``,
        never-ordered ones too) when given, else the training table's."""
        rows = table.select(["customerNumber", "city", "country", "creditLimit"]).to_pylist()
        seen: dict[int, Customer] = {}
        for r in rows:
            credit = float(r["creditLimit"]) if r["creditLimit"] is not None else None
            seen.setdefault(
                int(r["customerNumber"]), Customer(int(r["customerNumber"]), r["city"], r["country"], credit)
            )
        source = products.column("product_code") if products is not None else table.column("productCode")
        codes = sorted({c for c in source.to_pylist() if c is not None})
        return cls(tuple(seen.values()), tuple(codes))


def load_catalogue(settings) -> Catalogue:
    from retail_platform.warehouse.export import read_export

    build = read_export(settings)
    return Catalogue.from_training_table(build.training, build.catalogue)


MALFORMED_KINDS = (
    "bad_json",
    "missing_field",
    "wrong_type",
    "absurd_quantity",
    "oversized",
)


@dataclass
class Shoppers:
    catalogue: Catalogue
    new_share: float = 0.2
    malformed_share: float = 0.02
    seed: int | None = None
    rng: random.Random = field(init=False)
    _next_new: int = field(init=False)

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self._next_new = max((c.customer_number for c in self.catalogue.customers), default=0) + 100_000

    def event(self) -> dict:
        base = self.rng.choice(self.catalogue.customers)
        number = base.customer_number
        if self.rng.random() < self.new_share:
            self._next_new += 1
            number = self._next_new
        browsed = self.rng.sample(
            self.catalogue.product_codes, k=min(self.rng.randint(1, 6), len(self.catalogue.product_codes))
        )
        history = [
            {
                "product_code": code,
                "quantity": str(self.rng.choice((1, 1, 1, 2, 3))),
                "in_shopping_cart": self.rng.random() < 0.3,
            }
            for code in browsed
        ]
        return {
            "session_id": f"sim-{uuid.UUID(int=self.rng.getrandbits(128)).hex}",
            "customer_number": number,
            "city": base.city,
            "country": base.country,
            "credit_limit": base.credit_limit,
            "browse_history": history,
        }

    def malformed(self, kind: str) -> bytes:
        doc = self.event()
        if kind == "bad_json":
            return json.dumps(doc).encode()[:-7]
        if kind == "missing_field":
            doc.pop("session_id")
        elif kind == "wrong_type":
            doc["customer_number"] = str(doc["customer_number"])
        elif kind == "absurd_quantity":
            doc["browse_history"][0]["quantity"] = "100000"
        elif kind == "oversized":
            doc["notes"] = "x" * 40_000
        return json.dumps(doc).encode()

    def payload(self) -> tuple[str, bytes, str | None]:
        """(partition key, data, the malformed kind or None)."""
        if self.rng.random() < self.malformed_share:
            kind = self.rng.choice(MALFORMED_KINDS)
            return uuid.uuid4().hex, self.malformed(kind), kind
        doc = self.event()
        return doc["session_id"], json.dumps(doc).encode(), None


def simulate(
    client, stream: str, shoppers: Shoppers, rate: float, duration_s: float, tick_s: float = 0.05
) -> dict:
    """Put ``rate`` events a second for ``duration_s`` seconds, in small batches on a fixed schedule."""
    from retail_platform.serving.stream import put_all

    sent, malformed, started = 0, 0, time.monotonic()
    due = 0.0
    while (elapsed := time.monotonic() - started) < duration_s:
        due = rate * elapsed
        batch = []
        while sent + len(batch) < due:
            key, data, kind = shoppers.payload()
            malformed += kind is not None
            batch.append((key, data))
        if batch:
            put_all(client, stream, batch)
            sent += len(batch)
        time.sleep(tick_s)
    return {
        "sent": sent,
        "malformed": malformed,
        "seconds": round(time.monotonic() - started, 1),
        "stream": stream,
    }


def main(argv: list[str]) -> int:
    from retail_platform.serving.stream import describe, kinesis_client

    parser = argparse.ArgumentParser(prog="retail shoppers", description="put shopper events on the stream")
    parser.add_argument("--rate", type=float, default=0.5, help="events a second (the lab's: one every 2 s)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--malformed", type=float, default=0.02, help="share of malformed events")
    parser.add_argument(
        "--new-customers", type=float, default=0.2, help="share of customers the model never saw"
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv[1:])
    settings = ServingSettings.from_env()
    client = kinesis_client()
    describe(client, settings.events_stream, "RETAIL_EVENTS_STREAM")
    shoppers = Shoppers(load_catalogue(settings.platform), args.new_customers, args.malformed, args.seed)
    print(json.dumps(simulate(client, settings.events_stream, shoppers, args.rate, args.duration)))
    return 0
