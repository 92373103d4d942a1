"""Evaluation a data scientist can trust: a time-based split, the whole catalogue, the served rule,
baselines beside.

* **Split**: the newest ``test_fraction`` of first purchases sets the cutoff; the model is trained on
  the interactions first bought before it. The test period's purchases are every customer x product
  bought at or after the cutoff: first purchases, and repeat purchases of what they bought before.
* **Who**: every customer with a purchase in the test period. *Known* customers also bought before
  the split (the model has their id); *new* ones did not (only the features an event carries).
  *New with a cart*: the new customers again, as the sales platform's event shows them, with one
  product of their first order in the cart (which product: a fixed hash, not the code, whose prefix
  encodes the scale); that product is left out of the ranking, as serving leaves the cart out, and
  out of what is relevant; customers who bought nothing else are left out of this segment.
* **Ranking**: over the whole catalogue, no sampled negatives, leaving out exactly what serving
  leaves out (``retail_platform.vectors.exclusions``: the cart, which the evaluation has none of;
  not past purchases); relevant = the products bought in the test period.
* **Figures**: NDCG@10 (binary relevance), recall@10 (hits over the customer's test products),
  each with a 95% confidence interval (normal approximation over customers), and catalogue
  coverage (the share of products in anyone's top 10). Per-customer NDCG is kept, so two methods
  compare by a *paired* difference over the same customers, with its interval.
* **Beside the model**, the baselines a data scientist tries first: the popular list exactly as
  served (the top 50 by units of the 7 days before the split), popularity over the training period,
  popularity in the customer's country, the customer's favourite product line then popularity
  within it (and the line x scale variant), item-item co-occurrence; the model now in production
  (its published vectors, when it did not see the test period), and, on generated data, the
  ceiling: the generator's own purchase probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import scipy.sparse as sp

from retail_platform.recommender.data import InvalidTrainingBuild, TrainingData
from retail_platform.vectors.exclusions import excluded_products
from retail_platform.vectors.model import UserFeatures

log = logging.getLogger(__name__)
K = 10
KNOWN, NEW, NEW_WITH_CART = "known", "new", "new_with_cart"
SEGMENTS = (KNOWN, NEW, NEW_WITH_CART)
SEGMENT_LABELS = {KNOWN: "known customers", NEW: "new customers", NEW_WITH_CART: "new customers with a cart"}
CHUNK = 4096
SERVED_TOP_N, SERVED_DAYS = 50, 7  # the popular list as the warehouse builds it (fct_popular_products_7d)


@dataclass(frozen=True)
class Split:
    cutoff: pd.Timestamp
    train: pd.DataFrame
    test: pd.DataFrame
    known: np.ndarray  # customer numbers: test customers who bought before the split
    new: np.ndarray  # test customers who did not
    # New customers (ascending) -> the product in their cart (one of their first order's).
    carts: pd.Series = field(default_factory=lambda: pd.Series(dtype=object))

    def segments(self, products: pd.Index):
        """(segment, customers, each one's cart as a column of ``products`` or None) for each segment."""
        carts = products.get_indexer(self.carts.to_numpy()) if len(self.carts) else np.empty(0, np.int64)
        # Something of the catalogue besides the cart left to find.
        ranked = self.test[self.test["product_code"].isin(products)]
        others = ranked.groupby("customer_number")["product_code"].nunique()
        keep = (carts >= 0) & (others.reindex(self.carts.index).fillna(0).to_numpy() >= 2)
        return (
            (KNOWN, self.known, None),
            (NEW, self.new, None),
            (NEW_WITH_CART, self.carts.index.to_numpy(np.int64)[keep], carts[keep]),
        )


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

    def __str__(self) -> str:
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


@dataclass(frozen=True)
class MethodResult:
    method: str
    segment: str
    customers: int
    ndcg: Estimate
    recall: Estimate
    coverage: float
    # NDCG@10 of each customer, in the segment's customer order: what paired differences read.
    per_customer: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "per_customer"}


def paired(a: np.ndarray, b: np.ndarray) -> Estimate:
    """The mean per-customer difference a - b over the same customers, with its 95% interval."""
    return Estimate.of(np.asarray(a, float) - np.asarray(b, float))


# A method scores the catalogue for a batch of customers: (customers, carts=None) -> (customers,
# products); ``carts``, when given, is each customer's cart product as a catalogue column.
Scorer = Callable[..., np.ndarray]


def catalogue_index(data: TrainingData) -> pd.Index:
    """What the evaluation ranks: the training table's products and the catalogue's unseen ones, as
    a published version holds them: in code order, as serving reads them (equal scores: the lower
    index, so the lower code, first on both sides)."""
    return pd.Index(sorted([*data.products.index, *(f.product_code for f in data.unseen)]))


def time_split(data: TrainingData, test_fraction: float) -> Split:
    interactions = data.interactions
    if not 0 < test_fraction < 1:
        raise ValueError(f"the test fraction must lie between 0 and 1, got {test_fraction}")
    cutoff = interactions["first_ordered_at"].quantile(1 - test_fraction)
    train = interactions[interactions["first_ordered_at"] < cutoff]
    test = interactions[interactions["last_ordered_at"] >= cutoff]
    if train.empty or test.empty:
        raise InvalidTrainingBuild(
            f"training build {data.build_id}: fct_customer_product_interactions.first_ordered_at cannot be "
            f"split in time ({len(train)} interactions before {cutoff}, {len(test)} after)"
        )
    seen = set(train["customer_number"].unique())
    test_customers = np.sort(test["customer_number"].unique())
    known = np.array([c for c in test_customers if c in seen], dtype=np.int64)
    new = np.array([c for c in test_customers if c not in seen], dtype=np.int64)
    return Split(pd.Timestamp(cutoff), train, test, known, new, first_order_carts(test, new))


def first_order_carts(test: pd.DataFrame, new: np.ndarray) -> pd.Series:
    """One product of each new customer's first order, for those who bought something else too."""
    frame = test[test["customer_number"].isin(new)].drop_duplicates(["customer_number", "product_code"])
    if frame.empty:
        return pd.Series(dtype=object)
    first = frame.groupby("customer_number")["first_ordered_at"].transform("min")
    firsts = frame[frame["first_ordered_at"] == first]
    # A fixed hash picks the product: not the code, whose prefix encodes the scale.
    key = pd.util.hash_pandas_object(firsts[["customer_number", "product_code"]], index=False)
    chosen = (
        firsts.assign(key=key.to_numpy())
        .sort_values(["customer_number", "key"])
        .drop_duplicates("customer_number")
    )
    others = frame.groupby("customer_number").size()
    chosen = chosen[chosen["customer_number"].map(others).to_numpy() >= 2]
    return chosen.set_index("customer_number")["product_code"].sort_index()


def _pair_matrix(frame: pd.DataFrame, customers: np.ndarray, products: pd.Index) -> sp.csr_matrix:
    rows = pd.Index(customers).get_indexer(frame["customer_number"])
    cols = products.get_indexer(frame["product_code"])
    keep = (rows >= 0) & (cols >= 0)
    matrix = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])),
        shape=(len(customers), len(products)),
    )
    matrix.data[:] = 1.0  # a pair once, however many rows
    return matrix


def _excluded_mask(past: sp.csr_matrix, products: pd.Index, carts: np.ndarray | None = None) -> np.ndarray:
    """Each customer's excluded products by the served rule (``carts``: each one's cart column)."""
    codes = products.to_numpy()
    mask = np.zeros(past.shape, bool)
    for row in range(past.shape[0]):
        bought = codes[past.indices[past.indptr[row] : past.indptr[row + 1]]]
        cart = () if carts is None or carts[row] < 0 else (codes[carts[row]],)
        excluded = excluded_products(cart, bought)
        if excluded:
            mask[row, products.get_indexer(list(excluded))] = True
    return mask


def top_k_rows(scores: np.ndarray, excluded: np.ndarray, k: int = K) -> np.ndarray:
    """Each row's k best column indices, best first (ties: lower index first), never an excluded one."""
    scores = np.array(scores, dtype=np.float64)
    scores[excluded] = -np.inf
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    keys = np.take_along_axis(scores, top, axis=1)
    order = np.lexsort((top, -keys), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    # Rows where equal scores straddle the cut: which of them made the top k was the partition's
    # choice; rank those rows whole, the lower index first (as serving's top_k does).
    kth = keys.min(axis=1, keepdims=True)
    straddle = (scores == kth).sum(axis=1) > (keys == kth).sum(axis=1)
    for row in np.flatnonzero(straddle):
        top[row] = np.argsort(-scores[row], kind="stable")[:k]
    return top


def _scores(scorer: Scorer, customers: np.ndarray, carts: np.ndarray | None) -> np.ndarray:
    return scorer(customers) if carts is None else scorer(customers, carts)


def rankings(
    scorer: Scorer,
    customers: np.ndarray,
    split: Split,
    products: pd.Index,
    k: int = K,
    carts: np.ndarray | None = None,
):
    """The top k product codes the evaluation scores for each customer (what serving must show)."""
    seen = _pair_matrix(split.train, customers, products)
    top = top_k_rows(_scores(scorer, customers, carts), _excluded_mask(seen, products, carts), k)
    return [[products[i] for i in row] for row in top]


def evaluate_method(
    name: str,
    segment: str,
    scorer: Scorer,
    customers: np.ndarray,
    split: Split,
    products: pd.Index,
    carts: np.ndarray | None = None,
) -> MethodResult:
    """Rank the catalogue for each customer with ``scorer`` and score the top 10 (``carts``: each
    customer's cart product, left out of the ranking and of what is relevant)."""
    relevant = _pair_matrix(split.test, customers, products)
    seen = _pair_matrix(split.train, customers, products)
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    ndcg, recall, shown = [], [], np.zeros(len(products), bool)
    for start in range(0, len(customers), CHUNK):
        batch = slice(start, start + CHUNK)
        cart = None if carts is None else carts[batch]
        top = top_k_rows(_scores(scorer, customers[batch], cart), _excluded_mask(seen[batch], products, cart))
        shown[np.unique(top)] = True
        wanted = relevant[batch].toarray()
        if cart is not None:
            rows = np.flatnonzero(cart >= 0)
            wanted[rows, cart[rows]] = 0  # already chosen: not something to find
        hits = np.take_along_axis(wanted, top, axis=1).astype(float)
        n_relevant = wanted.sum(axis=1)
        ideal = np.cumsum(discounts)[np.minimum(n_relevant, K).astype(int) - 1]
        ndcg.append((hits * discounts[: top.shape[1]]).sum(axis=1) / ideal)
        recall.append(hits.sum(axis=1) / n_relevant)
    ndcg_all = np.concatenate(ndcg) if ndcg else np.array([])
    recall_all = np.concatenate(recall) if recall else np.array([])
    return MethodResult(
        name,
        segment,
        len(customers),
        Estimate.of(ndcg_all),
        Estimate.of(recall_all),
        float(shown.mean()),
        ndcg_all,
    )


# ---------------------------------------------------------------------------------- baselines
def counts_scorer(counts: np.ndarray) -> Scorer:
    row = counts.astype(np.float64)
    return lambda customers, carts=None: np.broadcast_to(row, (len(customers), len(row)))


def product_counts(frame: pd.DataFrame, products: pd.Index) -> np.ndarray:
    """Distinct buyers per product (a tiny tie-break by catalogue order keeps rankings stable)."""
    cols = products.get_indexer(frame["product_code"])
    counts = np.bincount(cols[cols >= 0], minlength=len(products)).astype(float)
    return counts - np.arange(len(products)) * 1e-9


def popularity_scorer(split: Split, products: pd.Index) -> Scorer:
    return counts_scorer(product_counts(split.train, products))


def served_popular_units(split: Split, products: pd.Index, days: int = SERVED_DAYS) -> pd.Series:
    """Units per product in the ``days`` before the split, as fct_popular_products_7d counts them.

    The build holds each pair's first and last purchase and its total units, not every order: an
    order in the window is the pair's first or last one, and carries the pair's mean units an order."""
    start = split.cutoff - timedelta(days=days)
    frame = split.train
    per_order = frame["units"].astype(float) / frame.get("orders", pd.Series(1, index=frame.index)).clip(
        lower=1
    )
    first_in = frame["first_ordered_at"] > start
    last_in = (
        (frame["last_ordered_at"] > start)
        & (frame["last_ordered_at"] < split.cutoff)
        & (frame["last_ordered_at"] != frame["first_ordered_at"])
    )
    units = per_order * (first_in.astype(int) + last_in.astype(int))
    by_product = units[units > 0].groupby(frame["product_code"][units > 0]).sum()
    return by_product[by_product.index.isin(products)]


def last_week_scorer(split: Split, products: pd.Index, days: int = SERVED_DAYS) -> Scorer:
    """The popular list exactly as served: the top 50 by units of the week before the split (ties by
    code), in that order; nothing else (the fallback serves only the list)."""
    units = served_popular_units(split, products, days)
    ranked = sorted(units.items(), key=lambda kv: (-kv[1], kv[0]))[:SERVED_TOP_N]
    row = np.full(len(products), -np.inf)
    for rank, (code, _) in enumerate(ranked):
        row[products.get_loc(code)] = SERVED_TOP_N - rank
    return counts_scorer(row)


def country_scorer(data: TrainingData, split: Split, products: pd.Index) -> Scorer:
    """Popularity in the customer's country; all-country popularity where the country is unknown."""
    overall = product_counts(split.train, products)
    country_of = data.customers["country"]
    frame = split.train.assign(country=split.train["customer_number"].map(country_of))
    by_country = {
        country: product_counts(group, products) + 1e-6 * overall
        for country, group in frame.groupby("country")
    }

    def score(customers: np.ndarray, carts: np.ndarray | None = None) -> np.ndarray:
        countries = pd.Series(customers).map(country_of)
        return np.stack([by_country.get(c, overall) for c in countries])

    return score


def group_scorer(data: TrainingData, split: Split, products: pd.Index, columns: list[str]) -> Scorer:
    """The customer's favourite group of products (product line, or line x scale: the one they
    bought most of before the split), then popularity within it; the rest by popularity. A customer
    with no history: the cart's group, as if they had bought it; else popularity in their country."""
    overall = product_counts(split.train, products)
    groups = data.products[columns].astype(str).agg("|".join, axis=1).reindex(products).fillna("")
    group_codes, group_of = np.unique(groups.to_numpy(), return_inverse=True)
    bought = split.train.assign(group=split.train["product_code"].map(groups))
    counts = bought.groupby(["customer_number", "group"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=group_codes, fill_value=0)
    # Favourite: most bought; ties go to the more popular group (then the first), never at random.
    group_size = np.bincount(group_of, weights=np.maximum(overall, 0), minlength=len(group_codes))
    favourite = pd.Series(
        np.argmax(counts.to_numpy() * 1e6 + group_size[None, :] / max(group_size.max(), 1), axis=1),
        index=counts.index,
    )
    fallback = country_scorer(data, split, products)
    popularity = overall / max(overall.max(), 1.0)

    def score(customers: np.ndarray, carts: np.ndarray | None = None) -> np.ndarray:
        fav = favourite.reindex(customers).to_numpy().astype(float)
        if carts is not None:
            fav = np.where(np.isnan(fav) & (carts >= 0), group_of[carts], fav)
        known = ~np.isnan(fav)
        out = np.empty((len(customers), len(products)))
        if known.any():
            out[known] = (group_of[None, :] == fav[known, None].astype(int)) + 0.5 * popularity[None, :]
        if (~known).any():
            out[~known] = fallback(customers[~known])
        return out

    return score


def cooccurrence_scorer(data: TrainingData, split: Split, products: pd.Index) -> Scorer:
    """Item-item co-occurrence: the sum of the cosine similarities (bought by the same customers)
    of each product to what the customer bought (no history: to the cart's product; neither:
    popularity in their country)."""
    customers = np.sort(split.train["customer_number"].unique())
    bought = _pair_matrix(split.train, customers, products)
    together = (bought.T @ bought).toarray().astype(np.float64)
    norms = np.sqrt(np.maximum(np.diag(together), 1.0))
    similarity = together / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    index = pd.Index(customers)
    tie_break = 1e-6 * product_counts(split.train, products) / max(len(customers), 1)
    fallback = country_scorer(data, split, products)

    def score(batch: np.ndarray, carts: np.ndarray | None = None) -> np.ndarray:
        rows = index.get_indexer(batch)
        out = np.empty((len(batch), len(products)))
        known = rows >= 0
        if known.any():
            out[known] = bought[rows[known]] @ similarity + tie_break
        from_cart = ~known & (carts >= 0) if carts is not None else np.zeros(len(batch), bool)
        if from_cart.any():
            out[from_cart] = similarity[carts[from_cart]] + tie_break
        rest = ~known & ~from_cart
        if rest.any():
            out[rest] = fallback(batch[rest])
        return out

    return score


def baseline_scorers(data: TrainingData, split: Split, products: pd.Index) -> dict[str, Scorer]:
    return {
        "popular_7d": last_week_scorer(split, products),
        "popularity": popularity_scorer(split, products),
        "popular_by_country": country_scorer(data, split, products),
        "favourite_line": group_scorer(data, split, products, ["productLine"]),
        "line_x_scale": group_scorer(data, split, products, ["productLine", "productScale"]),
        "cooccurrence": cooccurrence_scorer(data, split, products),
    }


# ---------------------------------------------------------------------------------- published vectors
def as_served(features: UserFeatures) -> UserFeatures:
    """A customer's features as the sales platform's event carries them (no state): what the
    handler embeds a customer the model has no vector for from."""
    return UserFeatures(
        features.customer_number, features.city, None, features.country, features.credit_limit
    )


def vectors_scorer(
    customer_numbers: np.ndarray,
    user_vectors: np.ndarray,
    product_codes: tuple[str, ...],
    item_vectors: np.ndarray,
    embed: Callable[[int, np.ndarray | None], np.ndarray],
    products: pd.Index,
) -> Scorer:
    """Inner product of published vectors (in float32, as serving computes it); customers without
    one are embedded from features and the item vector of their cart's product (as the handler embeds
    an event's browse history), and catalogue products the version does not have rank last."""
    items = np.full((len(products), item_vectors.shape[1]), 0.0, np.float32)
    present = products.get_indexer(pd.Index(product_codes))
    items[present[present >= 0]] = item_vectors[present >= 0]
    missing = np.ones(len(products), bool)
    missing[present[present >= 0]] = False
    index = pd.Index(customer_numbers)

    def score(customers: np.ndarray, carts: np.ndarray | None = None) -> np.ndarray:
        rows = index.get_indexer(customers)
        carts = np.full(len(customers), -1) if carts is None else carts
        users = np.stack(
            [
                user_vectors[r]
                if r >= 0
                else embed(int(c), items[[cart]] if cart >= 0 and not missing[cart] else None)
                for r, c, cart in zip(rows, customers, carts, strict=True)
            ]
        ).astype(np.float32)
        scores = (users @ items.T).astype(np.float64)
        scores[:, missing] = -np.inf
        return scores

    return score
