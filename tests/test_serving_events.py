"""Every real event gets an answer: products the model never saw and products the catalogue does not
know are answered by the model and named in the record; only malformed data is a dead letter; a
fallback is a whole answer (similar items from the anchor's line); the event comes back as it was
sent; the deadline is checked after the model step; every product of the catalogue is published
with a vector."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import PRODUCTS, encode, event, line_of, make_model, make_popular

from retail_platform.serving.breaker import CircuitBreaker
from retail_platform.serving.handler import Handler, HandlerConfig
from retail_platform.serving.holder import ModelHolder
from retail_platform.serving.records import FallbackReason, Origin, UserSource
from retail_platform.serving.search import ServingSnapshot

NEVER_ORDERED = PRODUCTS[-1]  # in the catalogue, its vector computed from features (like S18_3233)
NOT_IN_CATALOGUE = "S99_9999"  # added on the source after the last build


def handler_on(model, popular=None, clock=time.time, deadline_s: float = 60) -> Handler:
    holder = ModelHolder(None, CircuitBreaker("test"), Path("/nonexistent/popular.json"), poll_s=1)
    holder.snapshot = ServingSnapshot.build(model, popular or make_popular(codes=PRODUCTS[:60]))
    return Handler(holder, HandlerConfig(top_k=10, deadline_s=deadline_s), clock=clock)


def handle(handler: Handler, raw: bytes, arrival: float | None = None):
    arrival = handler.clock() if arrival is None else arrival
    return handler.handle(raw, event_id="e-1", arrival=arrival, origin=Origin.STREAM)


@pytest.fixture(scope="module")
def model():
    return make_model("v1", from_features=[NEVER_ORDERED])


# ---------------------------------------------------------------------- products the model does not know
def test_a_never_ordered_product_and_one_the_catalogue_does_not_know_are_answered_by_the_model(model):
    doc = event(100, browse=[(PRODUCTS[3], 1, False), (NEVER_ORDERED, 1, True), (NOT_IN_CATALOGUE, 2, True)])
    record = handle(handler_on(model), encode(doc)).record
    assert (record.fallback, record.model_version, record.user_source) == (False, "v1", UserSource.PUBLISHED)
    assert record.unknown_products == [NOT_IN_CATALOGUE]
    assert record.products_from_features == [NEVER_ORDERED]
    # The unknown product is kept out of the anchor: the latest cart item the catalogue knows anchors.
    assert record.similar_items.product_code == NEVER_ORDERED
    assert record.similar_items.source == "model"
    similar = [i.id for i in record.similar_items.similar_items]
    assert len(similar) == 10 and NEVER_ORDERED not in similar
    assert NEVER_ORDERED not in [i.id for i in record.recommended_items]  # the cart is left out


def test_an_event_whose_only_product_is_unknown_is_answered_without_similar_items(model):
    record = handle(handler_on(model), encode(event(100, browse=[(NOT_IN_CATALOGUE, 1, True)]))).record
    assert (record.fallback, record.unknown_products, record.similar_items) == (
        False,
        [NOT_IN_CATALOGUE],
        None,
    )
    assert len(record.recommended_items) == 10


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=100)
ITEMS = st.fixed_dictionaries(
    {
        "product_code": st.sampled_from([*PRODUCTS, NOT_IN_CATALOGUE, "NEW-1"]),
        "quantity": st.integers(1, 1000).map(str),
        "in_shopping_cart": st.booleans(),
    }
)
EVENTS = st.fixed_dictionaries(
    {
        "session_id": st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=128),
        "customer_number": st.one_of(st.sampled_from([100, 103, 250]), st.integers(1, 2**62)),
        "browse_history": st.lists(ITEMS, max_size=30),
    },
    optional={
        "city": st.one_of(st.none(), TEXT),
        "country": st.one_of(st.none(), st.sampled_from(["USA", "France", "Japan"]), TEXT),
        "credit_limit": st.one_of(
            st.none(),
            st.integers(0, 10**12),
            st.floats(0, 1e12, allow_nan=False, allow_infinity=False),
        ),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(doc=EVENTS)
def test_events_built_from_the_catalogue_are_answered_and_come_back_as_sent(model, doc):
    """Never a dead letter; every field sent is in the record with the same value and type (21000
    stays 21000, "1" stays "1"); a field not sent comes back null."""
    outcome = handle(handler_on(model, clock=lambda: 1000.0), json.dumps(doc).encode())
    assert outcome.dead_letter is None, outcome.dead_letter
    record = json.loads(outcome.json)
    for name, value in doc.items():
        assert record[name] == value and type(record[name]) is type(value), name
    for name in {"city", "country", "credit_limit"} - set(doc):
        assert record[name] is None
    names = [i["product_code"] for i in doc["browse_history"]]
    assert record["unknown_products"] == list(dict.fromkeys(c for c in names if c not in PRODUCTS))


# ---------------------------------------------------------------------- the deadline and the fallback
class Clock:
    """A clock the test moves: ``advance`` is called from inside the model step."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class SlowEncoder:
    """Embeds like the model's encoder, but the model step takes ``seconds`` of the fake clock."""

    def __init__(self, inner, clock: Clock, seconds: float):
        self.inner, self.clock, self.seconds = inner, clock, seconds

    def embed(self, features, browsed=None):
        self.clock.now += self.seconds
        return self.inner.embed(features, browsed)


def slow_model(clock: Clock, seconds: float):
    model = make_model("v1", from_features=[NEVER_ORDERED])
    object.__setattr__(model, "encoder", SlowEncoder(model.encoder, clock, seconds))
    return model


def test_a_model_step_that_crosses_the_deadline_serves_the_fallback():
    """The deadline is checked after the model step: an answer that became late inside it is not
    served as the model's."""
    clock = Clock()
    handler = handler_on(slow_model(clock, 0.5), clock=clock, deadline_s=0.3)
    new_customer = event(999_999, browse=[(PRODUCTS[4], 1, True)])
    record = handle(handler, encode(new_customer), arrival=clock.now).record
    assert (record.fallback, record.fallback_reason, record.model_version) == (
        True,
        FallbackReason.DEADLINE,
        None,
    )
    on_time = handler_on(slow_model(clock, 0.1), clock=clock, deadline_s=0.3)
    assert not handle(on_time, encode(new_customer), arrival=clock.now).record.fallback


def test_a_deadline_fallback_with_a_browse_history_has_similar_items_from_the_anchors_line():
    clock = Clock()
    handler = handler_on(slow_model(clock, 0.5), clock=clock, deadline_s=0.3)
    anchor, cart = PRODUCTS[7], {PRODUCTS[7], PRODUCTS[10]}
    doc = event(999_999, browse=[(PRODUCTS[10], 1, True), (anchor, 1, True), (PRODUCTS[1], 1, False)])
    record = handle(handler, encode(doc), arrival=clock.now).record
    assert record.fallback_reason == FallbackReason.DEADLINE
    similar = record.similar_items
    assert (similar.product_code, similar.source) == (anchor, "popular_in_line")
    ids = [i.id for i in similar.similar_items]
    assert ids and len(ids) <= 10
    assert all(line_of(c) == line_of(anchor) for c in ids), "from the anchor's line"
    assert not cart & set(ids)
    popular_in_line = [c for c in PRODUCTS[:60] if line_of(c) == line_of(anchor) and c not in cart]
    assert ids == popular_in_line[:10], "in the popular list's order"
    # The same shape as a model answer: the record serialises with every key.
    model_answer = json.loads(handle(handler_on(make_model("v1")), encode(doc)).json)
    assert json.loads(handle(handler, encode(doc), arrival=clock.now).json).keys() == model_answer.keys()


# ---------------------------------------------------------------------- a vector for every product
def catalogue_table(codes) -> pa.Table:
    return pa.table(
        {
            "product_code": list(codes),
            "product_line": [line_of(c) for c in codes],
            "product_scale": ["1:18"] * len(codes),
            "product_vendor": ["Vendor"] * len(codes),
            "quantity_in_stock": [100] * len(codes),
            "buy_price": [50.0] * len(codes),
            "msrp": [90.0] * len(codes),
        }
    )


def test_every_product_of_the_catalogue_gets_a_vector_from_its_features():
    from serving_support import make_payload

    from retail_platform.vectors.catalogue import catalogue_features, with_catalogue

    trained = make_payload("cat", products=PRODUCTS[:100])
    spec = trained.encoder_spec | {"weights": "sum"}
    names = ("line=classic cars", "line=planes", "scale=1:18", "price=q0", "msrp=q0", "stock=q0")
    vectors = np.random.default_rng(3).normal(size=(len(names), 32)).astype(np.float32)
    from dataclasses import replace

    payload = with_catalogue(
        replace(trained, encoder_spec=spec), catalogue_features(catalogue_table(PRODUCTS)), names, vectors
    )
    assert payload.product_codes == PRODUCTS
    assert set(payload.from_features) == set(PRODUCTS[100:])
    assert payload.product_lines == {c: line_of(c) for c in PRODUCTS}
    np.testing.assert_array_equal(payload.item_vectors[:100], trained.item_vectors)
    for unseen in (101, 102):  # a Planes product and a Classic Cars one: every token known
        line = f"line={line_of(PRODUCTS[unseen]).casefold()}"
        rows = [names.index(t) for t in (line, "scale=1:18", "price=q0", "msrp=q0", "stock=q0")]
        np.testing.assert_allclose(payload.item_vectors[unseen], vectors[rows].sum(axis=0), atol=1e-5)
    # A line the model never saw (Motorcycles) is left out of the sum, the rest still counts.
    rows = [names.index(t) for t in ("scale=1:18", "price=q0", "msrp=q0", "stock=q0")]
    np.testing.assert_allclose(payload.item_vectors[100], vectors[rows].sum(axis=0), atol=1e-5)


def test_the_store_keeps_the_catalogue_and_the_serving_side_answers_for_never_ordered_products(vector_db):
    import uuid
    from dataclasses import replace

    from serving_support import make_payload

    from retail_platform.serving.holder import vectors_conninfo
    from retail_platform.vectors import store

    conninfo = vectors_conninfo()
    payload = replace(
        make_payload(f"cat_{uuid.uuid4().hex[:6]}"),
        product_lines={c: line_of(c) for c in PRODUCTS},
        from_features=(NEVER_ORDERED,),
    )
    store.publish(conninfo, payload, make_popular("cat_popular", codes=PRODUCTS[:60]))
    model, popular = store.load_current(conninfo)
    assert (model.version, model.from_features) == (payload.version, frozenset({NEVER_ORDERED}))
    assert model.product_lines == payload.product_lines
    handler = handler_on(model, popular)
    record = handle(handler, encode(event(100, browse=[(NEVER_ORDERED, 1, True)]))).record
    assert (record.fallback, record.products_from_features) == (False, [NEVER_ORDERED])
    assert record.similar_items.product_code == NEVER_ORDERED
    assert handler.holder.snapshot.popular_by_line[line_of(NEVER_ORDERED)][0][0] == next(
        c for c in PRODUCTS if line_of(c) == line_of(NEVER_ORDERED)
    )


# ---------------------------------------------------------------------- from a build to an answer
LAB_EVENT = {  # the lab's example event, with the dump's never-ordered product in the cart
    "session_id": "lab-1",
    "customer_number": 478,
    "city": "Pasadena",
    "country": "USA",
    "credit_limit": 59811,
    "browse_history": [{"product_code": "S18_3233", "quantity": "1", "in_shopping_cart": True}],
}


@pytest.fixture
def classic_export(tmp_path, monkeypatch):
    """The generator's classic preset as an export build with dim_products and the dump's
    never-ordered S18_3233 (recommender_support), in a lake of the test's own; the default gate."""
    from recommender_support import export_generated

    from retail_platform.recommender.settings import RecommenderSettings

    monkeypatch.setenv("RETAIL_LAKE_URI", str(tmp_path / "lake"))
    monkeypatch.setenv("RETAIL_GROUND_TRUTH_DIR", str(tmp_path / "truth"))
    monkeypatch.setenv("RETAIL_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
    for name in ("RETAIL_RECOMMENDER_MODEL", "RETAIL_RECOMMENDER_GATE_BASELINE"):
        monkeypatch.delenv(name, raising=False)
    settings = RecommenderSettings.from_env()
    build_id, products = export_generated(settings, "classic", 42, catalogue=True)
    return settings, build_id, products


def lab_events(known: list[int], new: list[int], browsed: str) -> list[dict]:
    """Events in the lab's shape for known and new customers: the dump's never-ordered S18_3233 in
    every fourth, a product the catalogue does not know in every fifth, assorted credit limits."""
    events = []
    for i, customer in enumerate(known + new):
        browse = [{"product_code": browsed, "quantity": "2", "in_shopping_cart": False}]
        if i % 4 == 0:
            browse.append({"product_code": "S18_3233", "quantity": "1", "in_shopping_cart": True})
        if i % 5 == 0:
            browse.append({"product_code": NOT_IN_CATALOGUE, "quantity": "1", "in_shopping_cart": True})
        events.append(
            LAB_EVENT
            | {
                "session_id": f"lab-{i}",
                "customer_number": customer,
                "credit_limit": (59811, 21000, 0, 1234.5)[i % 4],
                "browse_history": browse,
            }
        )
    return events


def test_a_published_version_answers_the_labs_event_for_a_never_ordered_product(
    classic_export, vector_db, capsys
):
    """The real path with the default gate, no forced publish: a build with the catalogue (the dump's
    sizes), a trained version the gate approves (provisionally: 24 known customers cannot make a lead
    significant), published by the run's own publish step (every product of dim_products with a
    vector), loaded by the serving side; the lab's event and events for known and new customers, the
    never-ordered product among them, every one answered by the model."""
    from retail_platform.alerts import read_alerts
    from retail_platform.recommender.cli import main as cli
    from retail_platform.recommender.publishing import TRAIN, RunPlan, publish_decided
    from retail_platform.recommender.training import train_version
    from retail_platform.serving.holder import vectors_conninfo
    from retail_platform.vectors import store

    settings, build_id, products = classic_export
    conninfo = vectors_conninfo()
    outcome = train_version(settings, build_id=build_id, conninfo=conninfo)
    assert outcome.approved and outcome.gate.provisional == "provisional: not significant at n=24", (
        outcome.gate.summary()
    )
    plan = RunPlan(TRAIN, build_id, None, "a manual run trains").to_dict()
    published = publish_decided(settings, conninfo, plan, outcome.to_dict())
    assert published["published"] and published["version"] == outcome.version, published
    assert "provisional: not significant at n=24" in published["reason"]
    alert = read_alerts(settings.platform)[-1]
    assert alert["kind"] == "recommender_provisional" and outcome.version in alert["title"]
    assert cli(["recommender", "versions"]) == 0
    [listed] = [line for line in capsys.readouterr().out.splitlines() if line.startswith(outcome.version)]
    assert "approved  taste" in listed and listed.endswith("current  (provisional: not significant at n=24)")
    model, popular = store.load_current(conninfo)
    catalogue = set(products.column("product_code").to_pylist())
    assert set(model.product_codes) == catalogue, "a vector for every product of dim_products"
    assert "S18_3233" in model.from_features and model.product_lines["S18_3233"] == "Classic Cars"

    handler = handler_on(model, popular)
    record = json.loads(handle(handler, json.dumps(LAB_EVENT).encode()).json)
    assert (record["fallback"], record["model_version"]) == (False, outcome.version)
    assert (record["unknown_products"], record["products_from_features"]) == ([], ["S18_3233"])
    assert record["similar_items"]["product_code"] == "S18_3233"
    assert len(record["similar_items"]["similar_items"]) == 10
    assert {k: record[k] for k in LAB_EVENT} == LAB_EVENT, "the event comes back as it was sent"
    known = [int(c) for c in model.customer_numbers[:8]]
    new = [10**6 + i for i in range(8)]
    for doc in lab_events(known, new, browsed=model.product_codes[0]):
        outcome_of_event = handle(handler, json.dumps(doc).encode())
        assert outcome_of_event.dead_letter is None, doc
        record = json.loads(outcome_of_event.json)
        assert (record["fallback"], record["model_version"]) == (False, outcome.version), record
        assert len(record["recommended_items"]) == 10
        assert record["user_source"] == ("published" if doc["customer_number"] in known else "features")
        assert {k: record[k] for k in doc} == doc
