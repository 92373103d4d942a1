"""Evaluation a data scientist can trust: a time-based split, the whole catalogue, baselines beside.

* **Split**: the interactions whose first purchase falls in the newest ``test_fraction`` of time
  (by first-purchase time) are the test period; the model is trained on the rest only.
* **Who**: every customer with a purchase in the test period. *Known* customers also bought before
  the split (the model has their id); *new* ones did not (only their features are known).
* **Ranking**: over the whole catalogue, no sampled negatives, leaving out what the customer
  bought before the split; relevant = the products first bought in the test period.
* **Figures**: NDCG@10 (binary relevance), recall@10 (hits over the customer's test products),
  each with a 95% confidence interval (normal approximation over customers), and catalogue
  coverage (the share of products in anyone's top 10).
* **Beside the model**: the popular list as served today (most bought in the 7 days before the
  split), popularity over all the training period, popularity in the customer's country, the
  model now in production (its published vectors, when it did not see the test period), and, on
  generated data, the ceiling: the generator's own purchase probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
import scipy.sparse as sp

from retail_platform.recommender.data import InvalidTrainingBuild, TrainingData

log = logging.getLogger(__name__)
K = 10
KNOWN, NEW = "known", "new"
CHUNK = 4096


@dataclass(frozen=True)
class Split:
    cutoff: pd.Timestamp
    train: pd.DataFrame
    test: pd.DataFrame
    known: np.ndarray  # customer numbers: test customers who bought before the split
    new: np.ndarray  # test customers who did not


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray) -> Estimate:
        if len(values) == 0:
            return cls(float("nan"), float("nan"), float("nan"))
        mean = float(values.mean())
        half = 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else 0.0
        return cls(mean, mean - half, mean + half)


@dataclass(frozen=True)
class MethodResult:
    method: str
    segment: str
    customers: int
    ndcg: Estimate
    recall: Estimate
    coverage: float

    def to_dict(self) -> dict:
        return asdict(self)


# A method scores the catalogue for a batch of customers: (customers,) -> (customers, products).
Scorer = Callable[[np.ndarray], np.ndarray]


def time_split(data: TrainingData, test_fraction: float) -> Split:
    interactions = data.interactions
    if not 0 < test_fraction < 1:
        raise ValueError(f"the test fraction must lie between 0 and 1, got {test_fraction}")
    cutoff = interactions["first_ordered_at"].quantile(1 - test_fraction)
    train = interactions[interactions["first_ordered_at"] < cutoff]
    test = interactions[interactions["first_ordered_at"] >= cutoff]
    if train.empty or test.empty:
        raise InvalidTrainingBuild(
            f"training build {data.build_id}: fct_customer_product_interactions.first_ordered_at cannot be "
            f"split in time ({len(train)} interactions before {cutoff}, {len(test)} after)"
        )
    seen = set(train["customer_number"].unique())
    test_customers = np.sort(test["customer_number"].unique())
    known = np.array([c for c in test_customers if c in seen], dtype=np.int64)
    new = np.array([c for c in test_customers if c not in seen], dtype=np.int64)
    return Split(pd.Timestamp(cutoff), train, test, known, new)


def _pair_matrix(frame: pd.DataFrame, customers: np.ndarray, products: pd.Index) -> sp.csr_matrix:
    rows = pd.Index(customers).get_indexer(frame["customer_number"])
    cols = products.get_indexer(frame["product_code"])
    keep = (rows >= 0) & (cols >= 0)
    return sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])),
        shape=(len(customers), len(products)),
    )


def evaluate_method(
    name: str, segment: str, scorer: Scorer, customers: np.ndarray, split: Split, products: pd.Index
) -> MethodResult:
    """Rank the catalogue for each customer with ``scorer`` and score the top 10."""
    relevant = _pair_matrix(split.test, customers, products)
    seen = _pair_matrix(split.train, customers, products)
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    ndcg, recall, shown = [], [], np.zeros(len(products), bool)
    for start in range(0, len(customers), CHUNK):
        batch = slice(start, start + CHUNK)
        scores = np.array(scorer(customers[batch]), dtype=np.float64)
        scores[seen[batch].nonzero()] = -np.inf
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        shown[np.unique(top)] = True
        wanted = relevant[batch].toarray()
        hits = np.take_along_axis(wanted, top, axis=1).astype(float)
        n_relevant = wanted.sum(axis=1)
        ideal = np.cumsum(discounts)[np.minimum(n_relevant, K).astype(int) - 1]
        ndcg.append((hits * discounts).sum(axis=1) / ideal)
        recall.append(hits.sum(axis=1) / n_relevant)
    ndcg_all = np.concatenate(ndcg) if ndcg else np.array([])
    recall_all = np.concatenate(recall) if recall else np.array([])
    return MethodResult(
        name, segment, len(customers), Estimate.of(ndcg_all), Estimate.of(recall_all), float(shown.mean())
    )


# ---------------------------------------------------------------------------------- baselines
def counts_scorer(counts: np.ndarray) -> Scorer:
    row = counts.astype(np.float64)
    return lambda customers: np.broadcast_to(row, (len(customers), len(row)))


def product_counts(frame: pd.DataFrame, products: pd.Index) -> np.ndarray:
    """Distinct buyers per product (a tiny tie-break by catalogue order keeps rankings stable)."""
    cols = products.get_indexer(frame["product_code"])
    counts = np.bincount(cols[cols >= 0], minlength=len(products)).astype(float)
    return counts - np.arange(len(products)) * 1e-9


def popularity_scorer(split: Split, products: pd.Index) -> Scorer:
    return counts_scorer(product_counts(split.train, products))


def last_week_scorer(split: Split, products: pd.Index, days: int = 7) -> Scorer:
    """The popular list as served today: the most bought in the days before the split."""
    recent = split.train[split.train["first_ordered_at"] >= split.cutoff - timedelta(days=days)]
    return counts_scorer(product_counts(recent, products) + 1e-6 * product_counts(split.train, products))


def country_scorer(data: TrainingData, split: Split, products: pd.Index) -> Scorer:
    """Popularity in the customer's country; all-country popularity where the country is unknown."""
    overall = product_counts(split.train, products)
    country_of = data.customers["country"]
    frame = split.train.assign(country=split.train["customer_number"].map(country_of))
    by_country = {
        country: product_counts(group, products) + 1e-6 * overall
        for country, group in frame.groupby("country")
    }

    def score(customers: np.ndarray) -> np.ndarray:
        countries = pd.Series(customers).map(country_of)
        return np.stack([by_country.get(c, overall) for c in countries])

    return score


def vectors_scorer(
    customer_numbers: np.ndarray,
    user_vectors: np.ndarray,
    product_codes: tuple[str, ...],
    item_vectors: np.ndarray,
    embed: Callable[[int], np.ndarray],
    products: pd.Index,
) -> Scorer:
    """Inner product of published vectors; customers without one are embedded from features, and
    catalogue products the version does not have rank last."""
    items = np.full((len(products), item_vectors.shape[1]), 0.0, np.float32)
    present = products.get_indexer(pd.Index(product_codes))
    items[present[present >= 0]] = item_vectors[present >= 0]
    missing = np.ones(len(products), bool)
    missing[present[present >= 0]] = False
    index = pd.Index(customer_numbers)

    def score(customers: np.ndarray) -> np.ndarray:
        rows = index.get_indexer(customers)
        users = np.stack(
            [user_vectors[r] if r >= 0 else embed(int(c)) for r, c in zip(rows, customers, strict=True)]
        )
        scores = users @ items.T
        scores[:, missing] = -np.inf
        return scores

    return score
