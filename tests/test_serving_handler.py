"""The handler on its own, on models built from numpy arrays: the event contract, the model's answers,
the fallback and why, the budget from arrival, the in-flight cap, versions never mixed, the circuit
breaker, and API keys."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from serving_support import MALFORMED, PRODUCTS, encode, event, make_model, make_popular

from retail_platform.errors import ConfigurationError
from retail_platform.serving.auth import ApiKeys
from retail_platform.serving.breaker import BreakerState, CircuitBreaker, CircuitOpen
from retail_platform.serving.handler import Handler, HandlerConfig
from retail_platform.serving.holder import ModelHolder, VectorStoreClient, read_popular, save_popular
from retail_platform.serving.records import FallbackReason, Origin, UserSource
from retail_platform.serving.search import ServingSnapshot


def holder_with(model=None, popular=None) -> ModelHolder:
    holder = ModelHolder(None, CircuitBreaker("test"), Path("/nonexistent/popular.json"), poll_s=1)
    holder.snapshot = ServingSnapshot.build(model, popular)
    return holder


def answer(handler: Handler, doc: dict | bytes, arrival: float | None = None):
    raw = doc if isinstance(doc, bytes) else encode(doc)
    return handler.handle(raw, event_id="e-1", arrival=arrival or time.time(), origin=Origin.API)


@pytest.fixture
def model():
    return make_model("v1")


@pytest.fixture
def handler(model):
    # A budget no pause of a loaded machine reaches: the budget's own tests set theirs.
    return Handler(holder_with(model, make_popular()), HandlerConfig(top_k=10, deadline_s=60))


# ---------------------------------------------------------------------- the contract
@pytest.mark.parametrize(
    ("raw", "kind", "reason"), MALFORMED, ids=[f"{m[1]}-{i}" for i, m in enumerate(MALFORMED)]
)
def test_a_malformed_event_becomes_a_dead_letter_with_its_raw_payload_and_reason(handler, raw, kind, reason):
    outcome = answer(handler, raw)
    assert outcome.record is None
    letter = outcome.dead_letter
    assert (letter.kind, letter.payload) == (kind, raw)
    assert reason in letter.reason


def test_quantity_arrives_as_a_string_and_unknown_fields_are_ignored(handler):
    outcome = answer(handler, event(browse=[(PRODUCTS[0], 2, True)], channel="web"))
    assert outcome.record.browse_history[0].quantity == "2"


# ---------------------------------------------------------------------- the model's answers
def test_a_known_customer_gets_the_top_items_of_their_published_vector_minus_the_cart(handler, model):
    cart = [PRODUCTS[i] for i in np.argsort(-(model.item_vectors @ model.user_vectors[0]))[:2]]
    record = answer(handler, event(100, browse=[(cart[0], 1, True), (cart[1], 1, True)])).record
    scores = model.item_vectors @ model.user_vectors[0]
    expected = [PRODUCTS[i] for i in np.argsort(-scores) if PRODUCTS[i] not in cart][:10]
    assert [i.id for i in record.recommended_items] == expected
    assert (record.fallback, record.model_version, record.user_source) == (False, "v1", UserSource.PUBLISHED)
    assert record.recommended_items[0].score == pytest.approx(float(scores[PRODUCTS.index(expected[0])]))


def test_a_new_customer_is_embedded_from_the_events_features(handler, model):
    record = answer(handler, event(999_999, country="USA")).record
    scores = model.item_vectors @ model.encoder.by_country["usa"]
    assert [i.id for i in record.recommended_items] == [PRODUCTS[i] for i in np.argsort(-scores)[:10]]
    assert record.user_source is UserSource.FEATURES and not record.fallback


def test_similar_items_follow_the_latest_cart_item_else_the_latest_browsed_item(handler, model):
    browsed, in_cart, other_cart = PRODUCTS[5], PRODUCTS[7], PRODUCTS[9]
    record = answer(
        handler, event(browse=[(in_cart, 1, True), (browsed, 1, False), (other_cart, 1, True)])
    ).record
    assert record.similar_items.product_code == other_cart
    unit = model.item_unit_vectors
    distance = 1 - unit @ unit[PRODUCTS.index(other_cart)]
    expected = [PRODUCTS[i] for i in np.argsort(distance) if PRODUCTS[i] not in (in_cart, other_cart)][:10]
    assert [i.id for i in record.similar_items.similar_items] == expected
    distances = [i.distance for i in record.similar_items.similar_items]
    assert distances == sorted(distances)
    record = answer(handler, event(browse=[(in_cart, 1, False), (browsed, 1, False)])).record
    assert record.similar_items.product_code == browsed
    assert answer(handler, event(browse=[])).record.similar_items is None


# ---------------------------------------------------------------------- the fallback
def test_without_a_model_the_popular_list_answers_minus_the_cart_and_says_why():
    handler = Handler(holder_with(None, make_popular("p7")), HandlerConfig(top_k=5))
    record = answer(handler, event(browse=[(PRODUCTS[0], 1, True), ("UNKNOWN_TO_NOBODY", 1, False)])).record
    assert [i.id for i in record.recommended_items] == list(PRODUCTS[1:6])
    assert (record.fallback, record.fallback_reason, record.popular_build) == (
        True,
        FallbackReason.NO_MODEL,
        "p7",
    )
    assert record.model_version is None
    # A whole answer: similar items for the cart item from the popular list (its line is unknown
    # without a model), never the item itself nor the cart.
    assert record.similar_items.product_code == PRODUCTS[0]
    assert record.similar_items.source == "popular"
    assert [i.id for i in record.similar_items.similar_items] == list(PRODUCTS[1:6])
    assert record.unknown_products == []  # without a catalogue nothing can be called unknown


def test_the_budget_runs_from_arrival_so_time_spent_queued_counts(model):
    now = 1000.0  # a clock that stands still: only the time queued before arrival counts
    handler = Handler(
        holder_with(model, make_popular()), HandlerConfig(top_k=10, deadline_s=0.3), clock=lambda: now
    )
    record = answer(handler, event(), arrival=now - 0.31).record
    assert (record.fallback, record.fallback_reason) == (True, FallbackReason.DEADLINE)
    assert record.timings.queued_ms >= 310
    assert not answer(handler, event(), arrival=now - 0.29).record.fallback


def test_an_error_in_the_model_path_serves_the_fallback(model):
    class Broken:
        def embed(self, features, browsed=None):
            raise RuntimeError("encoder exploded")

    broken = make_model("v1")
    object.__setattr__(broken, "encoder", Broken())
    handler = Handler(holder_with(broken, make_popular()), HandlerConfig())
    record = answer(handler, event(999_999)).record
    assert (record.fallback, record.fallback_reason) == (True, FallbackReason.ERROR)


def test_requests_beyond_the_in_flight_cap_are_shed_to_the_fallback_not_queued(model):
    handler = Handler(holder_with(model, make_popular()), HandlerConfig(max_in_flight=2))
    assert handler.in_flight.try_enter() and handler.in_flight.try_enter()
    record = answer(handler, event()).record
    assert (record.fallback, record.fallback_reason) == (True, FallbackReason.OVERLOADED)
    handler.in_flight.leave()
    assert not answer(handler, event()).record.fallback


def test_a_request_finishes_on_the_version_it_began_with(model):
    """A reload swapping the snapshot while a request is being answered changes nothing in that answer."""
    second = make_model("v2", seed=2)
    holder = holder_with(model, make_popular())
    original = model.encoder

    class SwapWhileAnswering:
        def embed(self, features, browsed=None):
            holder.snapshot = ServingSnapshot.build(second, make_popular())  # a reload lands mid-request
            return original.embed(features, browsed)

    object.__setattr__(model, "encoder", SwapWhileAnswering())
    handler = Handler(holder, HandlerConfig())
    record = answer(handler, event(999_999, browse=[(PRODUCTS[3], 1, True)])).record
    scores = model.item_vectors @ original.by_country["usa"]
    assert record.model_version == "v1"
    assert [i.id for i in record.recommended_items] == [PRODUCTS[i] for i in np.argsort(-scores) if i != 3][
        :10
    ]
    unit = model.item_unit_vectors
    nearest = [PRODUCTS[i] for i in np.argsort(-(unit @ unit[3])) if i != 3][:10]
    assert [i.id for i in record.similar_items.similar_items] == nearest
    assert answer(handler, event(999_999)).record.model_version == "v2"


# ---------------------------------------------------------------------- the store's path
def test_the_circuit_opens_after_failures_and_lets_one_probe_through_after_the_pause():
    now = [0.0]
    breaker = CircuitBreaker("store", failures=2, reset_s=5, clock=lambda: now[0])

    def fail():
        raise OSError("refused")

    for _ in range(2):
        with pytest.raises(OSError):
            breaker.call(fail)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: "never called")
    now[0] = 5.0
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(OSError):
        breaker.call(fail)  # the probe fails: open again for another pause
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: "never called")
    now[0] = 10.0
    assert breaker.call(lambda: "back") == "back"
    assert breaker.state is BreakerState.CLOSED


def test_a_cold_start_with_the_store_down_answers_from_the_popular_lists_copy(tmp_path):
    save_popular(tmp_path / "popular.json", make_popular("p-disk"))
    assert read_popular(tmp_path / "popular.json") == make_popular("p-disk")
    down = VectorStoreClient("host=127.0.0.1 port=9 dbname=retail user=x password=y connect_timeout=2")
    holder = ModelHolder(down, CircuitBreaker("store"), tmp_path / "popular.json", poll_s=1).start(
        watch=False
    )
    assert "refused" in holder.status.last_error or "connect" in holder.status.last_error
    record = answer(Handler(holder, HandlerConfig()), event()).record
    assert (record.fallback_reason, record.popular_build) == (FallbackReason.NO_MODEL, "p-disk")


# ---------------------------------------------------------------------- API keys and settings
def test_api_keys_are_named_compared_in_full_and_never_shown():
    keys = ApiKeys.parse("shop:" + "a" * 20 + ",batch:" + "b" * 24, "RETAIL_API_KEYS")
    assert keys.client_of("a" * 20) == "shop" and keys.client_of("b" * 24) == "batch"
    assert keys.client_of("a" * 19) is None and keys.client_of(None) is None and keys.client_of("") is None
    assert "aaaa" not in repr(keys)
    with pytest.raises(ConfigurationError, match="RETAIL_API_KEYS: API keys of shop are shorter than 16"):
        ApiKeys.parse("shop:short", "RETAIL_API_KEYS")


def test_without_api_keys_the_missing_connection_is_named(monkeypatch):
    monkeypatch.delenv("RETAIL_API_KEYS", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_RETAIL_API_KEYS", raising=False)
    with pytest.raises(ConfigurationError, match="retail_api_keys"):
        ApiKeys.from_environment()
    monkeypatch.setenv(
        "AIRFLOW_CONN_RETAIL_API_KEYS",
        '{"conn_type": "generic", "extra": {"keys": {"shop": "' + "k" * 32 + '"}}}',
    )
    assert ApiKeys.from_environment().client_of("k" * 32) == "shop"


def test_a_bad_serving_setting_is_named():
    from retail_platform.serving.settings import ServingSettings

    with pytest.raises(ConfigurationError, match="RETAIL_SERVING_DEADLINE_MS must be a number"):
        ServingSettings.from_env({"RETAIL_SERVING_DEADLINE_MS": "fast"})
    with pytest.raises(ConfigurationError, match="RETAIL_SERVING_MAX_IN_FLIGHT must be positive"):
        ServingSettings.from_env({"RETAIL_SERVING_MAX_IN_FLIGHT": "0"})


def test_the_handler_is_safe_to_call_from_many_threads(handler):
    errors = []

    def work():
        try:
            for _ in range(50):
                assert not answer(handler, event(103, browse=[(PRODUCTS[1], 1, True)])).record.fallback
        except BaseException as exc:  # pragma: no cover - any error, not only a failed assert
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and handler.in_flight.current == 0
