"""The model: LightFM, hybrid (every customer and product is a bag of features), WARP loss.

WARP learns to rank: for each purchase it samples products until one the model ranks above the
purchased one, and pushes them apart, harder the higher the wrong one ranked. The target is what a
customer buys (each customer x product interaction); the rating is not the label.

LightFM's prediction for customer u and product i is ``<p_u, q_i> + b_u + b_i`` with ``p_u``,
``q_i`` the sums of their features' 31-component embeddings and ``b`` the sums of their features'
biases. The published 32-dimension vectors are ``[p_u, 1]`` and ``[q_i, b_i]``: their inner
product is the model's score up to ``b_u``, which is the same for every product and so never
changes a customer's ranking.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from retail_platform.recommender.data import TrainingData, product_features_of, user_features_of
from retail_platform.vectors.encoder import (
    BIAS_COLUMN,
    COMPONENTS,
    IMPUTED_ID,
    MEAN,
    SUM,
    FeatureEncoder,
    customer_tokens,
    norm_text,
    product_tokens,
    quantile_edges,
)
from retail_platform.vectors.model import DIMENSIONS, UserFeatures

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainParams:
    recipe: str = "lightfm"  # or "favourite_line" (see retail_platform.recommender.gate.RECIPES)
    epochs: int = 3
    learning_rate: float = 0.05
    seed: int = 42
    threads: int = 1
    components: int = COMPONENTS
    loss: str = "warp"
    max_sampled: int = 30  # WARP negatives tried per positive: 30 beat 10 (docs/notes/recommender.md)
    user_alpha: float = 1e-6
    item_alpha: float = 1e-6
    buckets: int = 5  # quantile buckets of credit limit, price, MSRP and stock
    popularity_weight: float = 0.005  # favourite_line: popularity's weight beside the line shares
    line_prior: float = (
        10.0  # taste: a customer's line shares, shrunk towards their country's by this many products
    )
    country_prior: float = 50.0  # taste: a country's line shares and scale tilt, shrunk towards everyone's
    scale_prior: float = (
        10.0  # taste: a customer's scale tilt, shrunk towards their country's by this many products
    )
    normalize: bool = (
        False  # True: each row's feature weights sum to 1 (LightFM's habit); False: each weighs 1
    )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FittedModel:
    params: TrainParams
    spec: dict  # the encoder's scalers (bucket edges)
    customer_numbers: np.ndarray  # int64, ascending
    user_vectors: np.ndarray  # float32 (customers, 32): [p_u, 1]
    product_codes: tuple[str, ...]  # ascending
    item_vectors: np.ndarray  # float32 (products, 32): [q_i, b_i]
    user_feature_names: tuple[str, ...]
    user_feature_vectors: np.ndarray  # float32: [embedding, 0]
    item_feature_names: tuple[str, ...]
    item_feature_vectors: np.ndarray  # float32: [embedding, bias]
    lightfm_state: dict  # the fitted LightFM arrays (the registry keeps them)
    train_seconds: float
    train_cpu_seconds: float = 0.0  # this thread's CPU time: the figure on a machine others share

    def encoder(self) -> FeatureEncoder:
        return FeatureEncoder(self.spec, self.user_feature_names, self.user_feature_vectors)


def feature_spec(data: TrainingData, buckets: int) -> dict:
    """The scalers: quantile edges of the numeric features, from the training build's values."""
    products = data.products
    return {
        "format": 1,
        "credit_limit_edges": quantile_edges(data.customers["creditLimit"].to_numpy(float), buckets),
        "price_edges": quantile_edges(products["buyPrice"].to_numpy(float), buckets),
        "msrp_edges": quantile_edges(products["MSRP"].to_numpy(float), buckets),
        "stock_edges": quantile_edges(products["quantityInStock"].to_numpy(float), buckets),
        "bias_column": BIAS_COLUMN,
    }


def _customer_token_lists(data: TrainingData, customers: np.ndarray, spec: dict) -> list[list[str]]:
    out = []
    for number in customers:
        if number in data.customers.index:
            features = user_features_of(number, data.customers.loc[number])
        else:  # bought, never rated: nothing but the id is known
            features = UserFeatures(int(number), None, None, None, None)
        out.append(customer_tokens(features, spec))
    return out


def _product_token_lists(data: TrainingData, with_id: set[str], spec: dict) -> list[list[str]]:
    return [
        product_tokens(product_features_of(code, row), spec, with_id=code in with_id)
        for code, row in data.products.iterrows()
    ]


def _feature_matrix(token_lists: list[list[str]], normalize: bool):
    """Rows of tokens as a CSR matrix (each row's weights summing to 1 when normalised), and the
    vocabulary."""
    import scipy.sparse as sp

    vocabulary: dict[str, int] = {}
    rows, cols, weights = [], [], []
    for row, tokens in enumerate(token_lists):
        for token in tokens:
            rows.append(row)
            cols.append(vocabulary.setdefault(token, len(vocabulary)))
            weights.append(1.0 / len(tokens) if normalize else 1.0)
    matrix = sp.csr_matrix(
        (np.asarray(weights, np.float32), (rows, cols)),
        shape=(len(token_lists), len(vocabulary)),
        dtype=np.float32,
    )
    return matrix, tuple(vocabulary)


@dataclass(frozen=True)
class FeatureMatrices:
    customers: np.ndarray  # int64, ascending: the rows of user_matrix
    products: tuple[str, ...]  # the catalogue: the rows of item_matrix
    user_matrix: object  # scipy CSR (customers, user features)
    user_names: tuple[str, ...]
    item_matrix: object  # scipy CSR (products, item features)
    item_names: tuple[str, ...]


def feature_matrices(
    data: TrainingData, interactions: pd.DataFrame, spec: dict, params: TrainParams
) -> FeatureMatrices:
    """Customers who bought in ``interactions`` (with their ids), the whole catalogue (ids of the
    products bought), as LightFM feature matrices."""
    customers = np.sort(interactions["customer_number"].unique()).astype(np.int64)
    user_matrix, user_names = _feature_matrix(_customer_token_lists(data, customers, spec), params.normalize)
    bought = set(interactions["product_code"].unique())
    item_matrix, item_names = _feature_matrix(_product_token_lists(data, bought, spec), params.normalize)
    return FeatureMatrices(
        customers, tuple(data.products.index), user_matrix, user_names, item_matrix, item_names
    )


def fit(data: TrainingData, interactions: pd.DataFrame, params: TrainParams) -> FittedModel:
    """Train on ``interactions`` (a subset of ``data.interactions``: the past, for an evaluation)."""
    import scipy.sparse as sp
    from lightfm import LightFM

    started, cpu_started = time.perf_counter(), time.thread_time()
    spec = feature_spec(data, params.buckets) | {"weights": MEAN if params.normalize else SUM}
    matrices = feature_matrices(data, interactions, spec, params)
    customers, products = matrices.customers, matrices.products
    user_matrix, user_names = matrices.user_matrix, matrices.user_names
    item_matrix, item_names = matrices.item_matrix, matrices.item_names
    user_index = pd.Index(customers)
    item_index = pd.Index(products)
    positives = sp.coo_matrix(
        (
            np.ones(len(interactions), np.float32),
            (
                user_index.get_indexer(interactions["customer_number"]),
                item_index.get_indexer(interactions["product_code"]),
            ),
        ),
        shape=(len(customers), len(products)),
    )
    model = LightFM(
        no_components=params.components,
        loss=params.loss,
        learning_rate=params.learning_rate,
        max_sampled=params.max_sampled,
        user_alpha=params.user_alpha,
        item_alpha=params.item_alpha,
        random_state=np.random.RandomState(params.seed),
    )
    model.fit(
        positives,
        user_features=user_matrix,
        item_features=item_matrix,
        epochs=params.epochs,
        num_threads=params.threads,
    )
    imputed_names, imputed = _imputed_ids(data, customers, user_names, model.user_embeddings)
    user_names = user_names + imputed_names
    user_features = _with_column(
        np.vstack([model.user_embeddings, imputed]), np.zeros(len(user_names), np.float32)
    )
    item_features = _with_column(model.item_embeddings, model.item_biases)
    return FittedModel(
        params=params,
        spec=spec,
        customer_numbers=customers,
        user_vectors=_with_column(user_matrix @ model.user_embeddings, np.ones(len(customers), np.float32)),
        product_codes=products,
        item_vectors=np.asarray(item_matrix @ item_features, dtype=np.float32),
        user_feature_names=user_names,
        user_feature_vectors=user_features,
        item_feature_names=item_names,
        item_feature_vectors=item_features,
        lightfm_state={
            "user_embeddings": model.user_embeddings,
            "user_biases": model.user_biases,
            "item_embeddings": model.item_embeddings,
            "item_biases": model.item_biases,
        },
        train_seconds=time.perf_counter() - started,
        train_cpu_seconds=time.thread_time() - cpu_started,
    )


def _imputed_ids(data: TrainingData, customers: np.ndarray, names: tuple[str, ...], embeddings: np.ndarray):
    """Mean id vectors of the known customers, by country and overall: what a new customer's
    missing id stands for (``features.IMPUTED_ID``)."""
    index = {name: i for i, name in enumerate(names)}
    rows = np.array([index[f"customer={c}"] for c in customers])
    countries = data.customers["country"].reindex(customers).map(norm_text).fillna("").to_numpy()
    out_names, out = [IMPUTED_ID], [embeddings[rows].mean(axis=0)]
    for country in sorted(set(countries)):
        out_names.append(f"{IMPUTED_ID}@{country}")
        out.append(embeddings[rows[countries == country]].mean(axis=0))
    return tuple(out_names), np.asarray(out, dtype=np.float32)


def _with_column(matrix, column: np.ndarray) -> np.ndarray:
    out = np.empty((matrix.shape[0], DIMENSIONS), dtype=np.float32)
    out[:, :BIAS_COLUMN] = np.asarray(matrix, dtype=np.float32)
    out[:, BIAS_COLUMN] = column
    return out
