"""The served heuristic, as vectors: a customer's product-line shares, then popularity.

The audit's heuristic, kept as ``auto``'s last recipe (after the taste model and LightFM): it ships
through the same registry, publish and serving path as a trained model, the serving side's inner
product of a user and an item vector reproducing it.

* item vector: one-hot of the product line | the product's coordinates in the country popularity
  space (below) | bias ``popularity_weight * (1 - rank / products)``, rank by distinct buyers;
* known customer: the share of their purchases in each line | zeros | 1. Score = their share of the
  product's line + a popularity term too small to reorder lines a customer bought in different
  amounts (under 200 purchases): their favourite line first, by popularity, then the next line.
* new customer (embedded by the encoder from the imputed id token ``customer=*@<country>``): zeros |
  the country's coordinates | 1. The country x product matrix of buyer shares (each country's row
  scaled to a maximum of 1) is factored by SVD into the components the lines leave free, so the
  score is popularity in the customer's country (exact when there are fewer countries than free
  components, the best approximation of that rank otherwise).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from retail_platform.recommender.data import TrainingData
from retail_platform.recommender.model import FittedModel, TrainParams, feature_spec
from retail_platform.vectors.encoder import BIAS_COLUMN, COMPONENTS, IMPUTED_ID, SUM, norm_text
from retail_platform.vectors.model import DIMENSIONS


def _popularity_rank_score(interactions: pd.DataFrame, products: pd.Index) -> np.ndarray:
    """1 for the most bought product down to 1/n for the least: unique, so nothing ties."""
    buyers = interactions.groupby("product_code")["customer_number"].nunique().reindex(products, fill_value=0)
    order = np.lexsort((np.arange(len(products)), -buyers.to_numpy()))
    score = np.empty(len(products))
    score[order] = 1.0 - np.arange(len(products)) / len(products)
    return score


def _country_factors(
    data: TrainingData, interactions: pd.DataFrame, products: pd.Index, rank: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Countries, their coordinates (countries, rank) and the products' (products, rank)."""
    country = interactions["customer_number"].map(data.customers["country"].map(norm_text)).fillna("")
    pairs = interactions.assign(country=country).drop_duplicates(
        ["country", "customer_number", "product_code"]
    )
    counts = pd.crosstab(pairs["country"], pairs["product_code"]).reindex(columns=products, fill_value=0)
    overall = counts.sum(axis=0).rename("")
    matrix = counts.to_numpy(float)
    matrix = np.vstack([matrix, overall.to_numpy(float)])  # the last row: every country (customer=*)
    matrix = matrix / np.maximum(matrix.max(axis=1, keepdims=True), 1.0)
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    rank = min(rank, len(s))
    return [*counts.index, None], u[:, :rank] * s[:rank], vt[:rank].T


def fit_heuristic(data: TrainingData, interactions: pd.DataFrame, params: TrainParams) -> FittedModel:
    started, cpu_started = time.perf_counter(), time.thread_time()
    products = pd.Index(data.products.index)
    lines = data.products["productLine"].map(norm_text).fillna("").reindex(products)
    line_names = sorted(set(lines))
    if len(line_names) >= COMPONENTS:
        raise ValueError(
            f"{len(line_names)} product lines do not fit the {COMPONENTS} components of a vector"
        )
    line_of = pd.Index(line_names).get_indexer(lines)
    free = COMPONENTS - len(line_names)
    countries, country_vectors, product_factors = _country_factors(data, interactions, products, free)
    rank = product_factors.shape[1]

    items = np.zeros((len(products), DIMENSIONS), np.float32)
    items[np.arange(len(products)), line_of] = 1.0
    items[:, len(line_names) : len(line_names) + rank] = product_factors
    items[:, BIAS_COLUMN] = params.popularity_weight * _popularity_rank_score(interactions, products)

    customers = np.sort(interactions["customer_number"].unique()).astype(np.int64)
    pairs = interactions.drop_duplicates(["customer_number", "product_code"])
    line_counts = pd.crosstab(
        pairs["customer_number"], line_of[products.get_indexer(pairs["product_code"])]
    ).reindex(index=customers, columns=range(len(line_names)), fill_value=0)
    shares = line_counts.to_numpy(float) / np.maximum(
        line_counts.to_numpy(float).sum(axis=1, keepdims=True), 1
    )
    users = np.zeros((len(customers), DIMENSIONS), np.float32)
    users[:, : len(line_names)] = shares
    users[:, BIAS_COLUMN] = 1.0

    names = tuple(IMPUTED_ID if c is None else f"{IMPUTED_ID}@{c}" for c in countries)
    features = np.zeros((len(names), DIMENSIONS), np.float32)
    features[:, len(line_names) : len(line_names) + rank] = country_vectors
    spec = feature_spec(data, params.buckets) | {"weights": SUM, "recipe": "favourite_line"}
    return FittedModel(
        params=params,
        spec=spec,
        customer_numbers=customers,
        user_vectors=users,
        product_codes=tuple(products),
        item_vectors=items,
        user_feature_names=names,
        user_feature_vectors=features,
        # A product nobody bought yet (published from the catalogue) gets its line and no popularity.
        item_feature_names=tuple(f"line={line}" for line in line_names),
        item_feature_vectors=np.eye(len(line_names), DIMENSIONS, dtype=np.float32),
        lightfm_state={},
        train_seconds=time.perf_counter() - started,
        train_cpu_seconds=time.thread_time() - cpu_started,
    )
