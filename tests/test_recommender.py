"""The recommender on the generator's classic preset and the real vector database: determinism, the
vectors, new customers, the gate, bad builds, the DAG end to end
with `dag.test()`, and rolling back from the command line."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pendulum
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from retail_platform.recommender import evaluation as ev
from retail_platform.recommender.data import InvalidTrainingBuild, training_data
from retail_platform.recommender.model import TrainParams, feature_matrices, fit
from retail_platform.recommender.registry import Registry
from retail_platform.recommender.settings import RecommenderSettings
from retail_platform.vectors import store
from retail_platform.vectors.model import UserFeatures
from retail_platform.warehouse.export import INTERACTIONS, POPULAR, export_training_table, read_export

ENV = ("RETAIL_LAKE_URI", "RETAIL_GROUND_TRUTH_DIR", "RETAIL_ALERTS_FILE")


# The warehouse's ml marts, over the generator's tables: the dbt models themselves are built and
# exported by test_warehouse's transform DAG test; here the recommender gets its input in seconds.
TRAINING_SQL = """
select r.customerNumber::integer as customerNumber, c.city, c.state, c.postalCode, c.country,
       c.creditLimit::decimal(10, 2) as creditLimit, r.productCode, p.productLine, p.productScale,
       p.quantityInStock::integer as quantityInStock, p.buyPrice::decimal(10, 2) as buyPrice,
       p.MSRP::decimal(10, 2) as MSRP, r.productRating::integer as productRating
from ratings r join customers c using (customerNumber) join products p using (productCode)
"""
INTERACTIONS_SQL = """
select o.customerNumber::integer as customer_number, l.productCode as product_code,
       min(o.orderTimestamp) as first_ordered_at, max(o.orderTimestamp) as last_ordered_at,
       count(distinct o.orderNumber)::integer as orders, sum(l.quantityOrdered)::integer as units,
       any_value(r.productRating)::integer as product_rating, true as has_order_time
from orderdetails l join orders o using (orderNumber)
left join ratings r on r.customerNumber = o.customerNumber and r.productCode = l.productCode
where o.status <> 'Cancelled'
group by all
"""
POPULAR_SQL = """
with lines as (
    select l.productCode, l.quantityOrdered, o.orderTimestamp
    from orderdetails l join orders o using (orderNumber) where o.status <> 'Cancelled'
), recent as (
    select productCode, sum(quantityOrdered) as units from lines
    where orderTimestamp > (select max(orderTimestamp) - interval 7 day from lines) group by all
)
select (row_number() over (order by units desc, productCode))::integer as popularity_rank,
       productCode as product_code, units::bigint as units
from recent order by popularity_rank limit 50
"""


@pytest.fixture(scope="module")
def classic_build(tmp_path_factory):
    """The generator's classic preset as an export build (and its ground truth), in a lake of the
    module's own."""
    import duckdb

    from retail_platform.sandbox.generator.build import generate
    from retail_platform.sandbox.generator.load import write_ground_truth
    from retail_platform.sandbox.generator.presets import get_preset

    root = tmp_path_factory.mktemp("recommender")
    saved = {name: os.environ.get(name) for name in ENV}
    os.environ.update(
        RETAIL_LAKE_URI=str(root / "lake"),
        RETAIL_GROUND_TRUTH_DIR=str(root / "truth"),
        RETAIL_ALERTS_FILE=str(root / "alerts.jsonl"),
    )
    source = generate(get_preset("classic"), seed=42)
    write_ground_truth(source, root / "truth")
    conn = duckdb.connect()
    for name, table in source.tables.items():
        conn.register(name, table)
    tables = [conn.sql(sql).to_arrow_table() for sql in (TRAINING_SQL, INTERACTIONS_SQL, POPULAR_SQL)]
    settings = RecommenderSettings.from_env()
    build_id = export_training_table(
        settings.platform, table=tables[0], companions={INTERACTIONS: tables[1], POPULAR: tables[2]}
    )["build_id"]
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
        frame.loc[past, "product_code"] = np.random.default_rng(0).choice(catalogue, int(past.sum()))
        frame = frame.drop_duplicates(["customer_number", "product_code"])
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
