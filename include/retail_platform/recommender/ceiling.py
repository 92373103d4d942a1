"""The ceiling on generated data: ranking by the generator's own purchase probabilities.

The generator writes its hidden tastes as ground truth and, beside them, ``purchase_model.json``:
the constants and the formula its sampler draws a product with (line by taste, then scale by
taste, then product by popularity). This module evaluates that formula from the files alone, with
no import of the generator (which is sandbox code): no model can rank purchases better on average.
Absent files (a real replica, a loaded dump) mean no ceiling.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from retail_platform.recommender.evaluation import Scorer

SUPPORTED_FORMAT = 1


def _softmax_log(logits: np.ndarray) -> np.ndarray:
    """log softmax along the last axis; -inf logits stay impossible."""
    top = np.max(logits, axis=-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))


def ceiling_scorer(truth_dir: Path, products: pd.Index) -> Scorer | None:
    """log P(product | customer) for the catalogue ``products``; None without ground truth."""
    model_file = truth_dir / "purchase_model.json"
    if not model_file.exists():
        return None
    model = json.loads(model_file.read_text())
    if model.get("format") != SUPPORTED_FORMAT:
        return None
    tastes = pq.read_table(truth_dir / "customer_tastes.parquet").to_pandas().set_index("customerNumber")
    region = pq.read_table(truth_dir / "region_line_effects.parquet").to_pandas()
    attributes = pq.read_table(truth_dir / "product_attributes.parquet").to_pandas()
    lines = sorted(attributes["productLine"].unique())
    scales = sorted(attributes["productScale"].unique())
    line_of = pd.Index(lines).get_indexer(attributes["productLine"])
    scale_of = pd.Index(scales).get_indexer(attributes["productScale"])
    group = np.zeros((len(lines), len(scales)))
    np.add.at(group, (line_of, scale_of), attributes["popularity"].to_numpy())
    with np.errstate(divide="ignore"):
        log_group, log_line = np.log(group), np.log(group.sum(axis=1))
    line_pref = tastes[[f"line_pref:{line}" for line in lines]].to_numpy()
    scale_pref = tastes[[f"scale_pref:{scale}" for scale in scales]].to_numpy()
    effects = region.pivot(index="territory", columns="productLine", values="effect")[lines]
    region_pref = effects.reindex(tastes["territory"]).to_numpy()
    # Products of the catalogue, mapped to the generator's; a product it does not know ranks last.
    where = pd.Index(attributes["productCode"]).get_indexer(products)
    known = where >= 0
    p_line, p_scale = line_of[where[known]], scale_of[where[known]]
    log_pop = np.log(attributes["popularity"].to_numpy()[where[known]]) - log_group[p_line, p_scale]
    customer_index = pd.Index(tastes.index)
    a, b = model["taste_strength_line"], model["taste_strength_scale"]

    def score(customers: np.ndarray, carts: np.ndarray | None = None) -> np.ndarray:
        rows = customer_index.get_indexer(customers)  # the truth: what is in the cart adds nothing
        out = np.full((len(customers), len(products)), -np.inf)
        ok = rows >= 0
        r = rows[ok]
        line_logp = _softmax_log(a * (line_pref[r] + region_pref[r]) + log_line)  # (n, lines)
        scale_logits = b * scale_pref[r][:, None, :] + log_group[None, :, :]  # (n, lines, scales)
        scale_logp = _softmax_log(scale_logits)
        block = line_logp[:, p_line] + scale_logp[:, p_line, p_scale] + log_pop
        sub = np.full((int(ok.sum()), len(products)), -np.inf)
        sub[:, known] = block
        out[ok] = sub
        return out

    return score
