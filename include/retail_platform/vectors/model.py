"""What the serving side holds in memory: one published model version, and the popular list.

These types are the interface between the recommender room (which trains, evaluates and publishes
versions into PostgreSQL + pgvector) and the serving room (which loads the current version and
answers from memory). Both are immutable: a reload builds a new object and swaps a reference, so
a request that began on one version finishes on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

DIMENSIONS = 32  # the interface the serving side reads


@dataclass(frozen=True)
class UserFeatures:
    """What is known of a shopper: the training table's customer columns (the event's for a new one)."""

    customer_number: int | None
    city: str | None
    state: str | None
    country: str | None
    credit_limit: float | None


class UserEncoder(Protocol):
    """Builds a user vector from features, with the published model's own vocabularies and scalers."""

    def embed(self, features: UserFeatures, browsed: np.ndarray | None = None) -> np.ndarray:
        """``browsed``: the item vectors of what the shopper's event browsed (an encoder may ignore it)."""
        ...


@dataclass(frozen=True)
class PopularProduct:
    rank: int
    product_code: str
    score: float


@dataclass(frozen=True)
class PopularList:
    """The week's most popular products: what the fallback serves."""

    build_id: str
    products: tuple[PopularProduct, ...]


@dataclass(frozen=True)
class ModelVersion:
    """One published version: vectors for known customers and every product of the catalogue, and
    the encoder for customers the model never saw. Scores: inner product (users to items), cosine
    (items to items).

    ``product_lines``: each product's line (the fallback's similar items come from the anchor's
    line); ``from_features``: the products the model never saw in training, whose vectors the
    publish step computed from their features with the published encoder."""

    version: str
    customer_numbers: np.ndarray  # int64, sorted ascending
    user_vectors: np.ndarray  # float32 (customers, DIMENSIONS), in customer_numbers' order
    product_codes: tuple[str, ...]
    item_vectors: np.ndarray  # float32 (products, DIMENSIONS)
    encoder: UserEncoder
    product_lines: dict[str, str] = field(default_factory=dict, repr=False)
    from_features: frozenset[str] = frozenset()
    item_unit_vectors: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        norms = np.linalg.norm(self.item_vectors, axis=1, keepdims=True)
        object.__setattr__(self, "item_unit_vectors", self.item_vectors / np.where(norms == 0, 1, norms))

    def user_vector(self, customer_number: int) -> np.ndarray | None:
        """The published vector of a known customer, or None."""
        i = int(np.searchsorted(self.customer_numbers, customer_number))
        if i < len(self.customer_numbers) and self.customer_numbers[i] == customer_number:
            return self.user_vectors[i]
        return None
