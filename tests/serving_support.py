"""Helpers for the serving tests: models built from numpy arrays, events, and servers run the way
./platform runs them (imported by the tests/test_serving_*.py modules)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retail_platform.serving.events import DeadLetterKind
from retail_platform.vectors.model import DIMENSIONS, ModelVersion, PopularList, PopularProduct, UserFeatures

PRODUCTS = tuple(f"S{10 + i // 100}_{1000 + i}" for i in range(120))


@dataclass(frozen=True)
class CountryEncoder:
    """A user encoder of the kind the recommender publishes: a vector per country, else a default."""

    by_country: dict
    default: np.ndarray

    def embed(self, features: UserFeatures, browsed: np.ndarray | None = None) -> np.ndarray:
        return self.by_country.get((features.country or "").casefold(), self.default)


LINES = ("Classic Cars", "Motorcycles", "Planes")


def line_of(code: str) -> str:
    """The product line the test catalogue gives each product (in turn)."""
    return LINES[PRODUCTS.index(code) % len(LINES)] if code in PRODUCTS else "Ships"


def make_model(
    version: str = "v1", *, users: int = 50, seed: int = 1, products=PRODUCTS, from_features=()
) -> ModelVersion:
    rng = np.random.default_rng(seed)
    customers = np.arange(100, 100 + users * 3, 3, dtype=np.int64)
    user_vectors = rng.normal(size=(users, DIMENSIONS)).astype(np.float32)
    item_vectors = rng.normal(size=(len(products), DIMENSIONS)).astype(np.float32)
    encoder = CountryEncoder(
        {"usa": rng.normal(size=DIMENSIONS).astype(np.float32)},
        rng.normal(size=DIMENSIONS).astype(np.float32),
    )
    return ModelVersion(
        version,
        customers,
        user_vectors,
        tuple(products),
        item_vectors,
        encoder,
        product_lines={code: line_of(code) for code in products},
        from_features=frozenset(from_features),
    )


def make_popular(build_id: str = "p1", codes=PRODUCTS[:15]) -> PopularList:
    return PopularList(build_id, tuple(PopularProduct(i + 1, c, float(100 - i)) for i, c in enumerate(codes)))


def event(customer_number=100, browse=(), **fields) -> dict:
    doc = {
        "session_id": fields.pop("session_id", "s-1"),
        "customer_number": customer_number,
        "city": "Pasadena",
        "country": "USA",
        "credit_limit": 59811,
        "browse_history": [
            {"product_code": code, "quantity": str(qty), "in_shopping_cart": cart}
            for code, qty, cart in browse
        ],
    }
    doc.update(fields)
    return doc


def encode(doc) -> bytes:
    return json.dumps(doc).encode()


OVERSIZED = encode(event(notes="x" * 40_000))
# Every kind of malformed event: (raw payload, kind, part of the reason: the field and the value quoted).
MALFORMED = [
    (b'{"session_id": "s", "customer_number": 1', DeadLetterKind.BAD_JSON, "Invalid JSON"),
    (b"\xff\xfe not utf-8", DeadLetterKind.BAD_JSON, "Invalid JSON"),
    (
        encode({k: v for k, v in event().items() if k != "session_id"}),
        DeadLetterKind.MISSING_FIELD,
        "session_id",
    ),
    (
        encode(event(customer_number="100")),
        DeadLetterKind.WRONG_TYPE,
        "customer_number: Input should be a valid integer, got '100'",
    ),
    (
        encode(
            event(browse_history=[{"product_code": PRODUCTS[0], "quantity": 1, "in_shopping_cart": True}])
        ),
        DeadLetterKind.WRONG_TYPE,
        "browse_history[0].quantity: Input should be a valid string, got 1",
    ),
    (
        encode(event(browse=[(PRODUCTS[0], "1x", True)])),
        DeadLetterKind.WRONG_TYPE,
        "browse_history[0].quantity: quantity must be a string of digits, got '1x'",
    ),
    (
        encode(event(browse=[(PRODUCTS[0], 0, True)])),
        DeadLetterKind.ABSURD_QUANTITY,
        "quantity '0' is outside 1..1000",
    ),
    (
        encode(event(browse=[(PRODUCTS[0], 5000, False)])),
        DeadLetterKind.ABSURD_QUANTITY,
        "quantity '5000' is outside 1..1000",
    ),
    (OVERSIZED, DeadLetterKind.OVERSIZED, f"event of {len(OVERSIZED):,} bytes is over 32,768"),
    (b"[1, 2]", DeadLetterKind.WRONG_TYPE, "event: Input should be an object, got a list of 2 entries"),
    (
        encode(event()).replace(b"59811", b"NaN"),
        DeadLetterKind.WRONG_TYPE,
        "credit_limit: credit_limit is NaN, not a number",
    ),
    (
        encode(event()).replace(b"59811", b"Infinity"),
        DeadLetterKind.WRONG_TYPE,
        "credit_limit: credit_limit is Infinity, not a number",
    ),
    (
        encode(event(city="c" * 300)),
        DeadLetterKind.WRONG_TYPE,
        "city: String should have at most 100 characters, got '" + "c" * 59 + "... (302 characters)",
    ),
]


# ---------------------------------------------------------------------- published versions
FEATURES = ("country=usa", "country=france", "credit=q0", "credit=q1", "credit=zero", "city=pasadena@usa")


def make_payload(version: str, *, users: int = 50, seed: int = 1, products=PRODUCTS):
    """A version for the vector store: random vectors, with the bias column the recommender uses."""
    from retail_platform.vectors.store import VersionPayload

    rng = np.random.default_rng(seed)
    item_vectors = rng.normal(size=(len(products), DIMENSIONS)).astype(np.float32)
    user_vectors = rng.normal(size=(users, DIMENSIONS)).astype(np.float32)
    user_vectors[:, -1] = 1.0
    feature_vectors = rng.normal(size=(len(FEATURES), DIMENSIONS)).astype(np.float32)
    feature_vectors[:, -1] = 0.0
    return VersionPayload(
        version=version,
        customer_numbers=np.arange(100, 100 + users * 3, 3, dtype=np.int64),
        user_vectors=user_vectors,
        product_codes=tuple(products),
        item_vectors=item_vectors,
        feature_names=FEATURES,
        feature_vectors=feature_vectors,
        encoder_spec={
            "credit_limit_edges": [10000.0],
            "price_edges": [],
            "msrp_edges": [],
            "stock_edges": [],
        },
        training_build="test",
        metrics={},
    )


def expected_top(payload, customer_number: int, k: int = 10, cart=()) -> list[str]:
    """The items a published customer should get from ``payload``, by brute force."""
    row = int(np.flatnonzero(payload.customer_numbers == customer_number)[0])
    scores = payload.item_vectors @ payload.user_vectors[row]
    order = [payload.product_codes[i] for i in np.argsort(-scores, kind="stable")]
    return [c for c in order if c not in set(cart)][:k]


def publish(conninfo: str, payload, popular=None):
    from retail_platform.vectors import store

    return store.publish(conninfo, payload, popular or make_popular())


# ---------------------------------------------------------------------- servers and readers
def read_lake(lake_root, folder: str) -> list[dict]:
    import pyarrow.dataset as ds

    from retail_platform.serving.records import DEAD_LETTER_SCHEMA, OUTPUT_SCHEMA

    schema = OUTPUT_SCHEMA if folder == "recommendations" else DEAD_LETTER_SCHEMA
    path = f"{lake_root}/{folder}"
    import os

    if not os.path.exists(path):
        return []
    files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".parquet")]
    return ds.dataset(files, schema=schema, format="parquet").to_table().to_pylist() if files else []


def read_stream(client, stream: str) -> list[dict]:
    """Every record on a stream so far (decoded JSON)."""
    from retail_platform.serving.stream import shard_ids

    out = []
    for shard in shard_ids(client, stream):
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = client.get_records(ShardIterator=iterator, Limit=10000)
            out += [json.loads(r["Data"]) for r in response["Records"]]
            if not response["Records"] or not response.get("MillisBehindLatest"):
                break
            iterator = response["NextShardIterator"]
    return out


API_KEY = "test-key-" + "k" * 24


class ApiProcess:
    """``retail api`` as its own process on a free port, as ./platform serve starts it."""

    def __init__(self, env: dict, log_file):
        import os
        import socket
        import subprocess
        import sys

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        with open(log_file, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "retail_platform.cli", "api", "--port", str(self.port)],
                env=os.environ | env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 90) -> dict:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, Path(self.log_file).read_text()[-3000:]
            try:
                return httpx.get(f"{self.url}/ready", timeout=2).json()
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"API not ready: {Path(self.log_file).read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except Exception:
                self.process.kill()
                self.process.wait()
