"""Features of customers and products, and the encoder that turns features into a vector.

Pure numpy on purpose: the serving side imports this module to embed customers the model never
saw, and must start without LightFM or scipy.

A customer (or product) is a bag of feature tokens, each token a row of the model's feature
embeddings; its vector is the sum of its tokens' rows (or their mean, when the spec's ``weights``
says ``mean``: LightFM's normalised features). Tokens the model never saw are left out. Tokens:

* customers: ``customer=<number>`` (when the model knows the customer; else the mean id vector of
  the known customers of the same country, ``customer=*@<country>``, or of all, ``customer=*``),
  ``city=<city>@<country>``, ``state=<state>@<country>``, ``country=<country>``,
  ``credit=<bucket>`` (``zero``, ``unknown`` or the quantile bucket of the credit limit);
* products: ``product=<code>`` (when known), ``line=<line>``, ``scale=<scale>``, ``vendor=<vendor>``
  (when the training table has the column), ``price=<bucket>``, ``msrp=<bucket>``, ``stock=<bucket>``.

Strings are compared trimmed and case-folded, so "Pasadena" in an event meets "PASADENA " in the
warehouse. The published 32-dimension vectors put LightFM's 31 components first and a bias column
last: a user vector carries a constant 1 there, an item vector its bias, so the inner product of
the two is exactly the model's score for ranking (the user's own bias, equal for every item, drops
out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retail_platform.vectors.model import DIMENSIONS, UserFeatures
from retail_platform.vectors.session import SessionFold

BIAS_COLUMN = DIMENSIONS - 1
MEAN, SUM = "mean", "sum"  # how a bag of tokens' vectors combine (the spec's "weights")
IMPUTED_ID = (
    "customer=*"  # the mean id vector of the known customers (``customer=*@<country>``: of a country)
)
COMPONENTS = DIMENSIONS - 1  # LightFM's no_components


def norm_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    text = str(value).strip().casefold()
    return text or None


def bucket_of(value: float | None, edges: list[float]) -> str:
    """``unknown``, ``zero`` or ``q<i>``: the quantile bucket of a non-negative amount."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "unknown"
    if value == 0:
        return "zero"
    return f"q{int(np.searchsorted(np.asarray(edges, dtype=float), float(value), side='right'))}"


def quantile_edges(values: np.ndarray, buckets: int) -> list[float]:
    """Inner edges of ``buckets`` equally filled buckets of the positive values."""
    positive = values[np.isfinite(values) & (values > 0)]
    if len(positive) == 0 or buckets < 2:
        return []
    edges = np.quantile(positive, np.linspace(0, 1, buckets + 1)[1:-1])
    return [float(e) for e in np.unique(edges)]


def customer_tokens(features: UserFeatures, spec: dict, *, with_id: bool = True) -> list[str]:
    country = norm_text(features.country)
    tokens = []
    if with_id and features.customer_number is not None:
        tokens.append(f"customer={int(features.customer_number)}")
    if (city := norm_text(features.city)) is not None:
        tokens.append(f"city={city}@{country or ''}")
    if (state := norm_text(features.state)) is not None:
        tokens.append(f"state={state}@{country or ''}")
    if country is not None:
        tokens.append(f"country={country}")
    tokens.append(f"credit={bucket_of(features.credit_limit, spec['credit_limit_edges'])}")
    return tokens


@dataclass(frozen=True)
class ProductFeatures:
    product_code: str | None
    product_line: str | None
    product_scale: str | None
    buy_price: float | None
    msrp: float | None
    quantity_in_stock: float | None
    product_vendor: str | None = None


def product_tokens(features: ProductFeatures, spec: dict, *, with_id: bool = True) -> list[str]:
    tokens = []
    if with_id and features.product_code is not None:
        tokens.append(f"product={str(features.product_code).strip()}")
    for name, value in (
        ("line", features.product_line),
        ("scale", features.product_scale),
        ("vendor", features.product_vendor),
    ):
        if (text := norm_text(value)) is not None:
            tokens.append(f"{name}={text}")
    tokens.append(f"price={bucket_of(features.buy_price, spec['price_edges'])}")
    tokens.append(f"msrp={bucket_of(features.msrp, spec['msrp_edges'])}")
    tokens.append(f"stock={bucket_of(features.quantity_in_stock, spec['stock_edges'])}")
    return tokens


@dataclass(frozen=True)
class FeatureEncoder:
    """Embeds customers from their features with a published version's feature vectors.

    ``feature_vectors`` rows are 32-dimensional with 0 in the bias column; ``embed`` adds the
    constant 1 there. Tokens the model never saw (a new city) are left out of the mean."""

    spec: dict
    feature_names: tuple[str, ...]
    feature_vectors: np.ndarray  # float32 (features, DIMENSIONS)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.feature_vectors.shape != (len(self.feature_names), DIMENSIONS):
            raise ValueError(
                f"feature vectors of shape {self.feature_vectors.shape} for {len(self.feature_names)} names"
            )
        object.__setattr__(self, "_index", {name: i for i, name in enumerate(self.feature_names)})
        object.__setattr__(self, "session", SessionFold.from_spec(self.spec))

    def known_tokens(self, features: UserFeatures) -> list[str]:
        tokens = [t for t in customer_tokens(features, self.spec) if t in self._index]
        if not any(t.startswith("customer=") for t in tokens):
            # A customer the model never saw: the id's vector is imputed by the mean id vector of the
            # customers of the same country (or of all customers), as the model was trained with one.
            for imputed in (f"{IMPUTED_ID}@{norm_text(features.country) or ''}", IMPUTED_ID):
                if imputed in self._index:
                    tokens.insert(0, imputed)
                    break
        return tokens

    def embed(self, features: UserFeatures, browsed: np.ndarray | None = None) -> np.ndarray:
        """The vector of a customer the model has none for. ``browsed``: the item vectors of the
        distinct products their event's browse history names (the cart too)."""
        tokens = self.known_tokens(features)
        if self.session is not None and browsed is not None and len(browsed):
            imputed = next((t for t in tokens if t.startswith(IMPUTED_ID)), None)
            folded = self.session.vector(imputed, browsed, DIMENSIONS) if imputed else None
            if folded is not None:
                return folded
        rows = [self._index[t] for t in tokens]
        vector = np.zeros(DIMENSIONS, dtype=np.float32)
        if rows:
            combine = np.sum if self.spec.get("weights") == SUM else np.mean
            vector += combine(self.feature_vectors[rows], axis=0, dtype=np.float64).astype(np.float32)
        vector[BIAS_COLUMN] = 1.0
        return vector
