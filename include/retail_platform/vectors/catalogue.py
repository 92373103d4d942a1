"""A vector for every product in the catalogue, ordered or not.

The model is trained on the products customers bought or rated; the catalogue (the warehouse's
``dim_products``) also holds products nobody ordered yet. Their vectors are computed when a version
is published, from their features with the version's own item feature vectors (the way the model
builds any product's vector, without the ``product=<code>`` token it never learnt), so the serving
side answers for any product of the catalogue, and knows every product's line.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa

from retail_platform.vectors.encoder import SUM, ProductFeatures, product_tokens
from retail_platform.vectors.model import DIMENSIONS
from retail_platform.vectors.store import VersionPayload

# dim_products' columns (snake case) and the training table's (camel case): either is read.
_COLUMNS = {
    "product_code": ("product_code", "productCode"),
    "product_line": ("product_line", "productLine"),
    "product_scale": ("product_scale", "productScale"),
    "product_vendor": ("product_vendor", "productVendor"),
    "buy_price": ("buy_price", "buyPrice"),
    "msrp": ("msrp", "MSRP"),
    "quantity_in_stock": ("quantity_in_stock", "quantityInStock"),
}


def catalogue_features(table: pa.Table) -> list[ProductFeatures]:
    """Each product of a catalogue table (``dim_products``) as the encoder's product features."""
    names = set(table.column_names)
    columns = {}
    for field, candidates in _COLUMNS.items():
        found = next((c for c in candidates if c in names), None)
        columns[field] = table.column(found).to_pylist() if found else [None] * table.num_rows

    def number(value):
        return None if value is None else float(value)

    return [
        ProductFeatures(
            product_code=str(code),
            product_line=columns["product_line"][i],
            product_scale=columns["product_scale"][i],
            buy_price=number(columns["buy_price"][i]),
            msrp=number(columns["msrp"][i]),
            quantity_in_stock=number(columns["quantity_in_stock"][i]),
            product_vendor=columns["product_vendor"][i],
        )
        for i, code in enumerate(columns["product_code"])
        if code is not None
    ]


def feature_table(table: pa.Table) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, vectors) of a registry's feature file (``feature``, 32-float ``embedding``)."""
    flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return tuple(table.column("feature").to_pylist()), flat.astype(np.float32).reshape(-1, DIMENSIONS)


def embed_product(
    features: ProductFeatures, spec: dict, index: dict[str, int], vectors: np.ndarray
) -> np.ndarray:
    """A product's vector from its feature tokens (no id token: the model never saw it); tokens the
    model does not know (a new line) are left out. Its last column carries the summed biases."""
    rows = [index[t] for t in product_tokens(features, spec, with_id=False) if t in index]
    if not rows:
        return np.zeros(DIMENSIONS, dtype=np.float32)
    combine = np.sum if spec.get("weights", SUM) == SUM else np.mean
    return combine(vectors[rows], axis=0, dtype=np.float64).astype(np.float32)


def with_catalogue(
    payload: VersionPayload,
    catalogue: list[ProductFeatures],
    item_feature_names: tuple[str, ...],
    item_feature_vectors: np.ndarray,
) -> VersionPayload:
    """``payload`` with a vector for every product of ``catalogue`` it lacks, and every product's line."""
    index = {name: i for i, name in enumerate(item_feature_names)}
    known = set(payload.product_codes)
    unseen = [f for f in catalogue if f.product_code not in known]
    lines = {f.product_code: f.product_line for f in catalogue if f.product_line}
    if not unseen:
        return replace(payload, product_lines=lines)
    extra = np.stack(
        [embed_product(f, payload.encoder_spec, index, item_feature_vectors) for f in unseen]
    ).astype(np.float32)
    return replace(
        payload,
        product_codes=payload.product_codes + tuple(f.product_code for f in unseen),
        item_vectors=np.vstack([payload.item_vectors, extra]),
        product_lines=lines,
        from_features=tuple(f.product_code for f in unseen),
    )
