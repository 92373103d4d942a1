"""The recommender on the generator's classic preset and the real vector database: determinism, the
vectors, new customers, the gate, bad builds, the DAG end to end
with `dag.test()`, and rolling back from the command line."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pendulum
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from recommender_support import export_generated

from retail_platform.recommender import evaluation as ev
from retail_platform.recommender.data import InvalidTrainingBuild, training_data
from retail_platform.recommender.model import TrainParams, feature_matrices, fit
from retail_platform.recommender.registry import Registry
from retail_platform.recommender.settings import RecommenderSettings
from retail_platform.vectors import store
from retail_platform.vectors.model import UserFeatures
from retail_platform.warehouse.export import INTERACTIONS, POPULAR, export_training_table, read_export

ENV = ("RETAIL_LAKE_URI", "RETAIL_GROUND_TRUTH_DIR", "RETAIL_ALERTS_FILE", "RETAIL_RECOMMENDER_GATE_BASELINE")


@pytest.fixture(scope="module")
def classic_build(tmp_path_factory):
    """The generator's classic preset as an export build (and its ground truth), in a lake of the
    module's own."""
    root = tmp_path_factory.mktemp("recommender")
    saved = {name: os.environ.get(name) for name in ENV}
    os.environ.update(
        RETAIL_LAKE_URI=str(root / "lake"),
        RETAIL_GROUND_TRUTH_DIR=str(root / "truth"),
        RETAIL_ALERTS_FILE=str(root / "alerts.jsonl"),
        # These tests gate on the popular list as served (a model trained on shuffled purchases must
        # lose to it); the default gate (the best baseline; provisional on 24 known customers) is
        # tested by test_a_lead_too_few_customers_can_resolve_passes_provisionally and, end to end,
        # by test_serving_events' published build.
        RETAIL_RECOMMENDER_GATE_BASELINE="popular_7d",
    )
    settings = RecommenderSettings.from_env()
    build_id, _ = export_generated(settings, "classic", 42, truth_dir=root / "truth")
    yield settings, build_id
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def classic_data(classic_build):
    settings, build_id = classic_build
    return training_data(read_export(settings.platform, build_id))


def export_variant(settings: RecommenderSettings, build_id: str, change) -> str:
    """A new export build: ``change(training, interactions, popular)`` returns the three tables."""
    build = read_export(settings.platform, build_id)
    training, interactions, popular = change(build.training, build.interactions, build.popular)
    return export_training_table(
        settings.platform, table=training, companions={INTERACTIONS: interactions, POPULAR: popular}
    )["build_id"]


def shuffled_purchases(data, test_fraction: float):
    """Every purchase before the evaluation's split gets a random product: a model trained on that
    knows nothing of its customers (the ranking counterpart of "trained on shuffled ratings")."""
    cutoff = ev.time_split(data, test_fraction).cutoff
    catalogue = np.array(data.products.index)

    def change(training, interactions, popular):
        frame = interactions.to_pandas()
        past = frame["first_ordered_at"] < cutoff
        # A real purchase again after the split stays a real test-period purchase; the past is random.
        again = frame[past & (frame["last_ordered_at"] >= cutoff)].assign(
            first_ordered_at=lambda f: f["last_ordered_at"]
        )
        frame.loc[past, "product_code"] = np.random.default_rng(0).choice(catalogue, int(past.sum()))
        frame.loc[past, "last_ordered_at"] = frame.loc[past, "first_ordered_at"]
        frame = pd.concat([frame, again]).drop_duplicates(["customer_number", "product_code"])
        return (
            training,
            pa.Table.from_pandas(frame, schema=interactions.schema, preserve_index=False),
            popular,
        )

    return change


def test_the_export_build_carries_interactions_and_the_popular_list(classic_build, classic_data):
    settings, build_id = classic_build
    build = read_export(settings.platform, build_id)
    assert set(build.manifest["companions"]) == {INTERACTIONS, POPULAR}
    interactions = build.interactions.to_pandas()
    assert not interactions.duplicated(["customer_number", "product_code"]).any()
    assert (interactions["last_ordered_at"] >= interactions["first_ordered_at"]).all()
    assert (interactions["orders"] >= 1).all() and interactions["product_rating"].notna().mean() > 0.9
    assert len(interactions) > 0.9 * build.training.num_rows
    assert classic_data.popular.build_id == build_id and classic_data.popular.products[0].rank == 1


def test_training_is_deterministic_and_the_vectors_reproduce_lightfms_ranking(classic_data):
    from lightfm import LightFM

    params = TrainParams(epochs=3)
    first, second = (
        fit(classic_data, classic_data.interactions, params),
        fit(classic_data, classic_data.interactions, params),
    )
    for name in ("user_vectors", "item_vectors", "user_feature_vectors", "item_feature_vectors"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert first.user_vectors.dtype == np.float32 and first.user_vectors.shape[1] == 32
    assert np.all(first.user_vectors[:, -1] == 1.0)
    # LightFM's own prediction, minus the customer's bias (equal for every product), is the inner product.
    matrices = feature_matrices(classic_data, classic_data.interactions, first.spec, params)
    lightfm = LightFM(no_components=params.components)
    for name, value in first.lightfm_state.items():
        setattr(lightfm, name, value)
        for kind in ("gradients", "momentum"):  # training state predict() insists on, unused by it
            setattr(
                lightfm,
                name.replace("embeddings", f"embedding_{kind}").replace("biases", f"bias_{kind}"),
                value,
            )
    users = np.repeat(np.arange(len(matrices.customers), dtype=np.int32), len(matrices.products))
    items = np.tile(np.arange(len(matrices.products), dtype=np.int32), len(matrices.customers))
    predicted = lightfm.predict(
        users, items, user_features=matrices.user_matrix, item_features=matrices.item_matrix
    )
    user_bias = matrices.user_matrix @ first.lightfm_state["user_biases"]
    expected = predicted.reshape(len(matrices.customers), -1) - user_bias[:, None]
    assert np.allclose(first.user_vectors @ first.item_vectors.T, expected, atol=1e-4)


def test_a_new_customer_gets_a_sensible_embedding(classic_data):
    split = ev.time_split(classic_data, 0.1)
    model = fit(classic_data, split.train, TrainParams())
    encoder = model.encoder()
    newcomer = int(split.new[0])
    assert newcomer not in set(model.customer_numbers)
    features = classic_data.user_features(newcomer)
    vector = encoder.embed(features)
    assert vector.shape == (32,) and np.isfinite(vector).all() and vector[-1] == 1.0
    tokens = encoder.known_tokens(features)
    country = features.country.strip().casefold()
    assert tokens[0] == f"customer=*@{country}", (
        "the missing id: the mean id vector of the country's customers"
    )
    assert f"country={country}" in tokens and not any(t == f"customer={newcomer}" for t in tokens)
    rows = [encoder.feature_names.index(t) for t in tokens]
    assert np.allclose(vector[:-1], encoder.feature_vectors[rows, :-1].sum(axis=0), atol=1e-5)
    # Features the model never saw are left out, not guessed; identical features, identical vectors.
    unseen_city = dataclasses.replace(features, city="Atlantis")
    assert np.allclose(encoder.embed(unseen_city), encoder.embed(dataclasses.replace(features, city=None)))
    assert np.array_equal(encoder.embed(dataclasses.replace(features, customer_number=None)), vector)
    # Its ranking leans on what many buy: positively correlated with the products' buyers.
    scores = model.item_vectors @ vector
    buyers = ev.product_counts(split.train, pd.Index(model.product_codes))
    assert pd.Series(scores).corr(pd.Series(buyers), method="spearman") > 0.3
    blank = encoder.embed(UserFeatures(None, None, None, None, None))
    assert np.count_nonzero(blank[:-1]) <= 31 and blank[-1] == 1.0


def test_the_gate_approves_the_model_and_refuses_one_trained_on_shuffled_purchases(
    classic_build, classic_data
):
    from retail_platform.recommender.training import train_version

    settings, build_id = classic_build
    outcome = train_version(settings, build_id=build_id)
    assert outcome.approved, outcome.gate.summary()
    shuffled = export_variant(settings, build_id, shuffled_purchases(classic_data, settings.test_fraction))
    refused = train_version(settings, build_id=shuffled)
    assert not refused.approved
    assert "does not beat popular_7d" in refused.gate.summary()
    manifest = Registry.from_settings(settings.platform).manifest(refused.version)
    assert manifest["status"] == "refused" and manifest["training_build"] == shuffled
    assert [c["recipe"] for c in manifest["candidates"]] == ["taste", "lightfm", "favourite_line"], (
        "auto tried every recipe"
    )
    methods = {r["method"] for r in manifest["evaluation"]["results"]}
    assert {"model", "popular_7d", "popularity", "popular_by_country", "ceiling"} <= methods
    known = manifest["evaluation"]["summary"]
    assert known["ceiling"]["known"] > known["popularity"]["known"], (
        "the generator's own probabilities rank best"
    )


def _drop_country(training, interactions, popular):
    return training.drop_columns(["country"]), interactions, popular


def _empty(training, interactions, popular):
    return training.slice(0, 0), interactions.slice(0, 0), popular


def _nan_price(training, interactions, popular):
    prices = pc.cast(training.column("buyPrice"), pa.float64()).to_numpy().copy()
    prices[3] = np.nan
    index = training.column_names.index("buyPrice")
    return training.set_column(index, "buyPrice", pa.array(prices)), interactions, popular


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_drop_country, "ratings_ml_training lacks the column(s) country"),
        (_empty, "ratings_ml_training is empty"),
        (_nan_price, "ratings_ml_training.buyPrice holds NaN"),
    ],
    ids=["missing-column", "empty-build", "nan-feature"],
)
def test_a_bad_build_fails_naming_build_and_column_and_registers_nothing(classic_build, change, message):
    from retail_platform.recommender.training import train_version

    settings, build_id = classic_build
    bad = export_variant(settings, build_id, change)
    before = [m["version"] for m in Registry.from_settings(settings.platform).versions()]
    with pytest.raises(
        InvalidTrainingBuild, match=f"training build {bad}: {message.replace('(', '.').replace(')', '.')}"
    ):
        train_version(settings, build_id=bad)
    assert [m["version"] for m in Registry.from_settings(settings.platform).versions()] == before


def test_a_training_export_retrains_only_past_the_minimum_interval(classic_build):
    from retail_platform.recommender.publishing import POPULAR_ONLY, PUBLISH, TRAIN, plan_run

    settings, _ = classic_build
    assert Registry.from_settings(settings.platform).versions(), "earlier tests registered versions"
    assert plan_run(settings).action == POPULAR_ONLY
    assert plan_run(settings, now=datetime.now(UTC) + timedelta(days=8)).action == TRAIN
    assert plan_run(settings, manual=True).action == TRAIN
    assert plan_run(settings, version="v1").action == PUBLISH


def _run_dag(dag, conf: dict, minutes: int):
    run = dag.test(logical_date=pendulum.now("UTC").add(minutes=minutes), run_conf=conf)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _asset_uris(run) -> set[str]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return {
            uri
            for (uri,) in session.execute(
                select(AssetModel.uri)
                .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
                .where(AssetEvent.source_run_id == run.run_id)
            )
        }


@pytest.mark.slow
def test_the_retrain_dag_publishes_refuses_and_rolls_back_end_to_end(
    classic_build, classic_data, vector_db, airflow_db
):
    from airflow.dag_processing.dagbag import DagBag

    from retail_platform.alerts import read_alerts
    from retail_platform.recommender.cli import main as cli

    settings, build_id = classic_build
    conninfo = vector_db.url()
    with store.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"drop schema if exists {store.SCHEMA} cascade")
    dag = DagBag(
        dag_folder=os.path.join(os.path.dirname(__file__), "..", "dags", "retrain_recommender.py")
    ).get_dag("retrain_recommender")
    # 1. A run on the build: trained, evaluated, approved, published with the popular list.
    run, states = _run_dag(dag, {"build_id": build_id}, 0)
    assert run.state == "success" and set(states.values()) == {"success"}, states
    assert _asset_uris(run) == {"retail://vector/recommender"}
    model, popular = store.load_current(conninfo)
    approved = Registry.from_settings(settings.platform).versions()[-1]
    assert (model.version, approved["status"], popular.build_id) == (
        approved["version"],
        "approved",
        build_id,
    )
    assert len(model.product_codes) == len(classic_data.products)
    # 2. A run on shuffled purchases: trained and registered, refused, announced; nothing changes.
    shuffled = export_variant(settings, build_id, shuffled_purchases(classic_data, settings.test_fraction))
    run, states = _run_dag(dag, {"build_id": shuffled}, 1)
    assert (run.state, states["train_and_evaluate"], states["publish_model"]) == (
        "success",
        "success",
        "skipped",
    )
    assert _asset_uris(run) == set(), "no Asset event: the serving side has nothing to reload"
    assert store.current_pointer(conninfo).version == approved["version"]
    refused = Registry.from_settings(settings.platform).versions()[-1]
    alert = read_alerts(settings.platform)[-1]
    assert alert["kind"] == "recommender_refused" and alert["channel"] == "#data-science"
    assert refused["version"] in alert["title"] and "popular_7d" in alert["text"]
    # 3. An operator publishes the refused version by name, then rolls back from the command line.
    run, states = _run_dag(dag, {"publish_version": refused["version"]}, 2)
    assert states["train_and_evaluate"] == "skipped" and states["publish_model"] == "success", states
    assert store.current_pointer(conninfo).version == refused["version"]
    assert cli(["recommender", "rollback"]) == 0
    pointer = store.current_pointer(conninfo)
    assert (pointer.version, pointer.previous_version) == (approved["version"], refused["version"])


# ---------------------------------------------------------------------------------- the served rule
NEVER_ORDERED = "S99_0001"


def with_catalogue(settings: RecommenderSettings, build_id: str) -> str:
    """The build again, with the catalogue (dim_products): its products and one nobody ordered."""
    from retail_platform.warehouse.export import CATALOGUE

    build = read_export(settings.platform, build_id)
    columns = ["productCode", "productLine", "productScale", "quantityInStock", "buyPrice", "MSRP"]
    products = build.training.select(columns).to_pandas().drop_duplicates("productCode")
    extra = products.iloc[[0]].assign(productCode=NEVER_ORDERED)
    catalogue = pa.Table.from_pandas(pd.concat([products, extra]), preserve_index=False)
    companions = {INTERACTIONS: build.interactions, POPULAR: build.popular, CATALOGUE: catalogue}
    return export_training_table(settings.platform, table=build.training, companions=companions)["build_id"]


@pytest.mark.parametrize("recipe", ["taste", "lightfm", "favourite_line"])
def test_the_evaluation_ranks_exactly_what_the_handler_serves(classic_build, vector_db, recipe):
    """Same version, same exclusions, same k: the evaluation's top 10 for a customer is the answer the
    handler (which the API and the stream consumer call) gives them."""
    import time

    from serving_support import encode, event

    from retail_platform.recommender.publishing import publish_version
    from retail_platform.recommender.training import (
        _embedder,
        _served_items,
        params_from,
        train,
        train_version,
    )
    from retail_platform.serving.breaker import CircuitBreaker
    from retail_platform.serving.handler import Handler, HandlerConfig
    from retail_platform.serving.holder import ModelHolder
    from retail_platform.serving.search import ServingSnapshot

    settings, build_id = classic_build
    settings = dataclasses.replace(settings, model=recipe)
    build_id = with_catalogue(settings, build_id)
    data = training_data(read_export(settings.platform, build_id))
    assert [f.product_code for f in data.unseen] == [NEVER_ORDERED]
    conninfo = vector_db.url()
    outcome = train_version(settings, build_id=build_id)
    publish_version(settings, conninfo, outcome.version, build_id=build_id)
    model, popular = store.load_current(conninfo)
    assert model.version == outcome.version and NEVER_ORDERED in model.product_codes
    # The evaluation's item vectors are the published ones, the never-ordered product's included.
    codes, items = _served_items(data, train(data, data.interactions, params_from(settings)))
    published = {code: i for i, code in enumerate(model.product_codes)}
    assert set(codes) == set(published)
    assert np.allclose(model.item_vectors[[published[c] for c in codes]], items, atol=1e-6)
    holder = ModelHolder(None, CircuitBreaker("test"), Path("/nonexistent/popular.json"), poll_s=1)
    holder.snapshot = ServingSnapshot.build(model, popular)
    handler = Handler(holder, HandlerConfig(top_k=ev.K, deadline_s=60))

    split = ev.time_split(data, settings.test_fraction)
    products = ev.catalogue_index(data)  # the catalogue's never-ordered product too, as published

    def scorer_of(version):
        """The evaluation's scorer over a published version's vectors."""
        return ev.vectors_scorer(
            version.customer_numbers,
            version.user_vectors,
            version.product_codes,
            version.item_vectors,
            _embedder(data, version.encoder.embed),
            products,
        )

    scorer = scorer_of(model)
    rated = data.customers.index
    known = [c for c in split.known if c in rated][:4]
    customers = np.array(known + [c for c in split.new if c in rated][:2], dtype=np.int64)
    expected = ev.rankings(scorer, customers, split, products)
    bought_before = split.train.groupby("customer_number")["product_code"].apply(set)
    for customer, ranking in zip(customers, expected, strict=True):
        row = data.customers.loc[customer]
        doc = event(
            int(customer), city=row["city"], country=row["country"], credit_limit=float(row["creditLimit"])
        )
        record = handler.handle(
            encode(doc), event_id=f"e{customer}", arrival=time.time(), origin="api"
        ).record
        assert not record.fallback and record.model_version == outcome.version
        assert [item.id for item in record.recommended_items] == ranking, customer
    assert any(set(r) & bought_before.get(c, set()) for c, r in zip(customers, expected, strict=True)), (
        "past purchases are not excluded (vectors.exclusions): some top 10 holds one"
    )

    # New shoppers with a product in the cart (the evaluation's new_with_cart segment): the cart is
    # left out, and the taste model folds it into their vector, in the evaluation as in the handler.
    # The published version saw every customer: these are served by it without their own vectors.
    shoppers = split.carts[split.carts.index.isin(rated)].iloc[:4]
    assert len(shoppers) >= 2
    unseen = ~np.isin(model.customer_numbers, shoppers.index)
    strangers = dataclasses.replace(
        model, customer_numbers=model.customer_numbers[unseen], user_vectors=model.user_vectors[unseen]
    )
    holder.snapshot = ServingSnapshot.build(strangers, popular)
    scorer = scorer_of(strangers)
    carts = products.get_indexer(shoppers.to_numpy())
    with_cart = ev.rankings(scorer, shoppers.index.to_numpy(), split, products, carts=carts)
    without = ev.rankings(scorer, shoppers.index.to_numpy(), split, products)
    for (customer, cart), ranking in zip(shoppers.items(), with_cart, strict=True):
        row = data.customers.loc[customer]
        doc = event(
            int(customer),
            browse=[(cart, 1, True)],
            city=row["city"],
            country=row["country"],
            credit_limit=float(row["creditLimit"]),
        )
        record = handler.handle(
            encode(doc), event_id=f"c{customer}", arrival=time.time(), origin="api"
        ).record
        assert not record.fallback and record.user_source == "features" and cart not in ranking
        assert [item.id for item in record.recommended_items] == ranking, (customer, cart)
    if recipe == "taste":
        assert any(a != b for a, b in zip(with_cart, without, strict=True)), "the cart changed no ranking"
    else:  # the other recipes do not read what a new shopper browsed: only the cart leaves their lists
        for a, b, cart in zip(with_cart, without, shoppers, strict=True):
            assert a[:9] == [c for c in b if c != cart][:9], (a, b, cart)


def test_what_a_new_shopper_browses_folds_into_the_taste_vector(classic_data):
    """Nothing browsed: the country's vector. A product of the cart: its line rises in the ranking
    (as a purchase would raise a known customer's). A vector without one-hot line and scale blocks
    (not the taste model's) is left out."""
    from retail_platform.recommender.training import train

    model = train(classic_data, classic_data.interactions, TrainParams(recipe="taste"))
    encoder = model.encoder()
    features = UserFeatures(None, None, None, "France", None)
    alone = encoder.embed(features)
    assert np.array_equal(encoder.embed(features, model.item_vectors[:0]), alone)
    assert np.allclose(
        encoder.session.vector("customer=*@france", model.item_vectors[:0], len(alone)), alone, atol=1e-6
    )
    lines = classic_data.products["productLine"].reindex(pd.Index(model.product_codes)).to_numpy()
    ranked = np.argsort(-(model.item_vectors @ alone))
    rare = lines[ranked[-1]]  # the line of the product France wants least
    cart = int(np.flatnonzero(lines == rare)[0])
    folded = encoder.embed(features, model.item_vectors[[cart]])

    def mean_rank(vector):  # of the line's products in the whole ranking
        order = np.argsort(-(model.item_vectors @ vector))
        return float(np.flatnonzero(lines[order] == rare).mean())

    assert mean_rank(folded) < mean_rank(alone)
    not_taste = np.full((1, alone.size), 0.3, np.float32)
    assert np.array_equal(encoder.embed(features, not_taste), alone)


# ---------------------------------------------------------------------------------- the gate
def _arrays(mean: float, n: int, *, spread: float = 0.05, shift: float = 0.0) -> np.ndarray:
    """Per-customer NDCG@10 with an exact mean: a deterministic +/- spread around it."""
    wiggle = np.where(np.arange(n) % 2 == 0, spread, -spread)
    return mean + shift + wiggle


def _scores(model_known, known: dict, model_new=None, new: dict | None = None, n: int = 400, *, cart=None):
    """``known``/``new``: baseline -> mean; the model moves by a constant from the base line, so the
    paired difference is exact, unless ``(mean, noise)`` asks for noise in the difference. ``cart``:
    ``(model, baselines)`` of the new customers with a cart."""
    base = _arrays(0.0, n)

    def column(spec):
        mean, noise = spec if isinstance(spec, tuple) else (spec, 0.0)
        return base + mean + np.where(np.arange(n) % 4 < 2, noise, -noise)

    out = {"known": {"model": column(model_known)} | {m: column(v) for m, v in known.items()}}
    if model_new is not None:
        out["new"] = {"model": column(model_new)} | {m: column(v) for m, v in (new or {}).items()}
    if cart is not None:
        out["new_with_cart"] = {"model": column(cart[0])} | {m: column(v) for m, v in cart[1].items()}
    return out


BASE = {"popular_7d": 0.045, "popularity": 0.046, "popular_by_country": 0.049, "favourite_line": 0.069}
POPULAR_ONLY = {k: v for k, v in BASE.items() if k != "favourite_line"}
NEW_BASE = {"popular_7d": 0.040, "popular_by_country": 0.050}
CART_BASE = {"popular_by_country": 0.044, "favourite_line": 0.042, "cooccurrence": 0.041}
GATE_CASES = [
    # id, scores, rule settings, production NDCG, approved, part of the first reason
    (
        "wins everywhere",
        _scores(0.08, BASE, 0.051, NEW_BASE),
        {},
        None,
        True,
        "beats popular_by_country by 10%",
    ),
    (
        "the margin over popularity",
        _scores(0.052, POPULAR_ONLY, 0.051, NEW_BASE),
        {},
        None,
        False,
        "vs popular_by_country 0.0490, paired difference +0.0030 [+0.0030, +0.0030]: does not beat "
        "popular_by_country by 10% (needs 0.0539)",
    ),
    ("margin setting", _scores(0.052, POPULAR_ONLY, 0.051, NEW_BASE), {"margin": 0.05}, None, True, "beats"),
    (
        "the paired interval against the heuristic",
        _scores((0.071, 0.03), BASE, 0.051, NEW_BASE),
        {},
        None,
        False,
        "known customers: NDCG@10 0.0710 vs favourite_line 0.0690, paired difference +0.0020 [-0.0009, "
        "+0.0049]: not above zero",
    ),
    (
        "loses to the heuristic",
        _scores(0.06, BASE, 0.051, NEW_BASE),
        {},
        None,
        False,
        "vs favourite_line 0.0690, paired difference -0.0090 [-0.0090, -0.0090]: below zero (favourite_line "
        "is better)",
    ),
    (
        "loses for new customers",
        _scores(0.08, BASE, 0.046, NEW_BASE),
        {},
        None,
        False,
        "new customers: NDCG@10 0.0460 vs popular_by_country 0.0500, paired difference -0.0040 "
        "[-0.0040, -0.0040]: worse than popular_by_country",
    ),
    (
        "loses for new customers with a cart",
        _scores(0.08, BASE, 0.051, NEW_BASE, cart=(0.040, CART_BASE)),
        {},
        None,
        False,
        "new customers with a cart: NDCG@10 0.0400 vs popular_by_country 0.0440, paired difference -0.0040 "
        "[-0.0040, -0.0040]: worse than popular_by_country",
    ),
    (
        "folds the cart in for new customers",
        _scores(0.08, BASE, 0.051, NEW_BASE, cart=(0.048, CART_BASE)),
        {},
        None,
        True,
        "beats",
    ),
    (
        "one new customer with a cart has no interval",  # ./platform run's classic calendar had one
        _scores(0.08, BASE, 0.051, NEW_BASE)
        | {"new_with_cart": {"model": np.array([0.3576]), "line_x_scale": np.array([0.4205])}},
        {},
        None,
        True,
        "beats",
    ),
    ("no new customers", _scores(0.08, BASE), {}, None, True, "beats"),
    ("production, within tolerance", _scores(0.08, BASE, 0.05, NEW_BASE), {}, 0.084, True, "beats"),
    (
        "production: more than 5% below",
        _scores(0.08, BASE, 0.05, NEW_BASE),
        {},
        0.0845,
        False,
        "NDCG@10 0.0800 is more than 5% below production 0.0845",
    ),
    (
        "tolerance setting",
        _scores(0.08, BASE, 0.05, NEW_BASE),
        {"tolerance": 0.0},
        0.081,
        False,
        "below production",
    ),
    (
        "baseline: popular_7d",
        _scores(0.06, BASE, 0.05, NEW_BASE),
        {"baseline": "popular_7d"},
        None,
        True,
        "beats popular_7d by 10%",
    ),
    (
        "baseline: popular_7d, margin",
        _scores(0.048, BASE, 0.05, NEW_BASE),
        {"baseline": "popular_7d"},
        None,
        False,
        "does not beat popular_7d by 10%",
    ),
    (
        "the heuristic is not gated against itself",
        _scores(0.06, BASE, 0.05, NEW_BASE),
        {"recipe": "favourite_line"},
        None,
        True,
        "beats popular_by_country by 10%",
    ),
]


@pytest.mark.parametrize(
    ("scores", "settings", "production", "approved", "reason"),
    [case[1:] for case in GATE_CASES],
    ids=[case[0] for case in GATE_CASES],
)
def test_every_gate_rule_and_setting(scores, settings, production, approved, reason):
    from retail_platform.recommender.gate import GateRules, decide

    rules = GateRules(**({"margin": 0.10, "tolerance": 0.05} | settings))
    decision = decide(scores, rules, production_ndcg=production, production_basis="v0 on this test period")
    assert decision.approved is approved, decision.summary()
    assert reason in decision.reasons[0], decision.reasons


def test_a_lead_too_few_customers_can_resolve_passes_provisionally(classic_build):
    """24 customers: an interval wider than the margin. Ahead by point estimate and behind nothing
    significantly: approved, marked provisional (decision, reason, registry-bound dict, alert);
    behind by point estimate, significantly behind, or significantly behind for new customers: refused."""
    from retail_platform.recommender.gate import GateRules, decide
    from retail_platform.recommender.publishing import provisional_alert

    rules = GateRules(margin=0.10, tolerance=0.05)
    ahead = decide(_scores((0.075, 0.1), BASE, 0.051, NEW_BASE, n=24), rules)
    assert ahead.approved and ahead.provisional == "provisional: not significant at n=24", ahead.summary()
    assert ahead.summary().startswith("approved (provisional: not significant at n=24): ")
    [reason] = [r for r in ahead.reasons if "vs favourite_line" in r]
    assert "paired difference +0.0060 [-0.0349, +0.0469]: not above zero, ahead by point estimate" in reason
    assert ahead.to_dict()["provisional"] == ahead.provisional
    settings, build_id = classic_build
    outcome = {"version": "v-small", "build_id": build_id, "approved": True, "gate": ahead.to_dict()}
    alert = provisional_alert(outcome | {"report": "(report)", "path": "(path)"}, settings)
    assert alert.kind == "recommender_provisional" and "provisional: not significant at n=24" in alert.title
    assert reason in alert.text
    behind = decide(_scores((0.066, 0.1), BASE, 0.051, NEW_BASE, n=24), rules)
    assert not behind.approved and behind.provisional is None
    assert "paired difference -0.0030 [-0.0439, +0.0379]: not above zero" in behind.reasons[0]
    clearly_behind = decide(_scores(0.06, BASE, 0.051, NEW_BASE, n=24), rules)
    assert not clearly_behind.approved
    assert clearly_behind.reasons[0].endswith("below zero (favourite_line is better)")
    loses_new = decide(_scores((0.075, 0.1), BASE, 0.046, NEW_BASE, n=24), rules)
    assert not loses_new.approved and loses_new.provisional is None
    assert (
        "new customers: NDCG@10 0.0460 vs popular_by_country 0.0500, paired difference -0.0040"
        in (loses_new.reasons[0])
    )
    # Enough customers to resolve the margin: the same kind of interval reaching zero is refused.
    resolved = decide(_scores((0.071, 0.03), BASE, 0.051, NEW_BASE, n=400), rules)
    assert not resolved.approved and resolved.provisional is None


def test_a_refusal_for_new_customers_is_announced_with_the_baseline_and_interval(classic_build):
    """Wins for known customers, loses for new ones: refused, and the alert says against what and by how much."""
    from retail_platform.alerts import read_alerts
    from retail_platform.recommender.gate import GateRules, decide
    from retail_platform.recommender.publishing import TRAIN, RunPlan, publish_decided

    settings, build_id = classic_build
    gate = decide(_scores(0.08, BASE, 0.046, NEW_BASE), GateRules(margin=0.10, tolerance=0.05))
    assert not gate.approved and gate.best_baseline == "favourite_line"
    outcome = {"version": "v-new-loses", "build_id": build_id, "approved": False, "gate": gate.to_dict()}
    outcome |= {"report": "(report)", "path": "(path)"}
    result = publish_decided(settings, None, RunPlan(TRAIN, build_id, None, "test").to_dict(), outcome)
    assert result["published"] is False
    alert = read_alerts(settings.platform)[-1]
    assert alert["kind"] == "recommender_refused" and "v-new-loses" in alert["title"]
    assert "new customers: NDCG@10 0.0460 vs popular_by_country 0.0500" in alert["text"]
    assert "paired difference -0.0040 [-0.0040, -0.0040]" in alert["text"]


def test_the_gate_refuses_a_model_that_loses_to_the_heuristic(classic_build):
    """On the classic preset LightFM loses to "favourite line, then popularity" (the heuristic the
    audit found): the default gate (best baseline) refuses it, naming the heuristic and the interval."""
    from retail_platform.alerts import read_alerts
    from retail_platform.recommender.publishing import TRAIN, RunPlan, publish_decided
    from retail_platform.recommender.training import train_version

    settings, build_id = classic_build
    settings = dataclasses.replace(settings, gate_baseline="best", model="lightfm")
    outcome = train_version(settings, build_id=build_id)
    assert not outcome.approved and outcome.gate.best_baseline == "favourite_line", outcome.gate.summary()
    [reason] = [r for r in outcome.gate.reasons if "vs favourite_line" in r]
    assert reason.startswith("known customers: NDCG@10 ") and "paired difference -" in reason
    assert reason.endswith("not above zero") and reason in outcome.gate.reasons[:2], outcome.gate.reasons
    publish_decided(settings, None, RunPlan(TRAIN, build_id, None, "test").to_dict(), outcome.to_dict())
    alert = read_alerts(settings.platform)[-1]
    assert outcome.version in alert["title"] and reason in alert["text"]


def test_when_the_gate_refuses_a_recipe_the_next_ships_through_the_same_path(
    classic_build, vector_db, monkeypatch
):
    """``auto`` tries its recipes in order until the gate approves one (taste, LightFM, the favourite
    line: the shuffled test sees all three tried). Here the chain is LightFM then the heuristic: a
    LightFM that learnt nothing (no epoch) is refused; the favourite-line heuristic is evaluated,
    approved and registered as the version, and serving answers from its vectors."""
    import time

    from serving_support import encode, event

    from retail_platform.recommender import training
    from retail_platform.recommender.publishing import publish_version
    from retail_platform.recommender.training import train_version
    from retail_platform.serving.breaker import CircuitBreaker
    from retail_platform.serving.handler import Handler, HandlerConfig
    from retail_platform.serving.holder import ModelHolder
    from retail_platform.serving.search import ServingSnapshot

    settings, build_id = classic_build
    settings = dataclasses.replace(settings, model="auto", epochs=0)
    monkeypatch.setattr(training, "recipes_of", lambda _: ("lightfm", "favourite_line"))
    outcome = train_version(settings, build_id=build_id)
    manifest = Registry.from_settings(settings.platform).manifest(outcome.version)
    assert outcome.approved and manifest["recipe"] == "favourite_line", outcome.report
    lightfm, heuristic = manifest["candidates"]
    assert (lightfm["recipe"], lightfm["approved"], heuristic["approved"]) == ("lightfm", False, True)
    assert "also tried: lightfm (refused: " in outcome.report
    publish_version(settings, vector_db.url(), outcome.version)
    model, popular = store.load_current(vector_db.url())
    holder = ModelHolder(None, CircuitBreaker("test"), Path("/nonexistent/popular.json"), poll_s=1)
    holder.snapshot = ServingSnapshot.build(model, popular)
    customer = int(model.customer_numbers[0])
    record = (
        Handler(holder, HandlerConfig(deadline_s=60))
        .handle(encode(event(customer)), event_id="e", arrival=time.time(), origin="api")
        .record
    )
    assert record.model_version == outcome.version and len(record.recommended_items) == 10
