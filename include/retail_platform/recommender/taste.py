"""The taste model: each customer's smoothed product-line and scale preferences, then each product's
share of its line x scale group, as vectors.

A collector picks a line, then a scale within it, then a model within that (the catalogue is
organised that way, and the generator draws purchases that way: ``ceiling.py``). The score is the
log of that chain, estimated from what the customer bought, shrunk towards their country:

    log P(line | u) + log P(scale | line, u) + log P(product | line, scale)

* ``P(line | u) = (n_ul + a * P(line | country)) / (n_u + a)``: ``n_ul`` the distinct products of
  line ``l`` the customer bought, ``a`` = ``params.line_prior`` (the country's share, itself shrunk
  towards every customer's with weight ``params.country_prior``);
* ``P(scale | line, u) ~ P(scale | line) * w_us``: ``P(scale | line)`` the share of the line's
  purchases in that scale; ``w_us`` the customer's scale tilt, bought over expected
  ``(m_us + b * w_cs) / (E_us + b)`` (``E_us`` what their lines alone predict, ``b`` =
  ``params.scale_prior``, ``w_cs`` the country's tilt);
* ``P(product | line, scale)``: the product's share of its group's buyers (a product nobody bought
  yet counts half a buyer).

As vectors (inner product = the score; ``L`` lines, ``S`` scales, ``L + S + 1 <= 32``):

* item: one-hot line | one-hot scale | 0... | ``log P(scale | line) + log P(product | line, scale)``
  in the bias column;
* known customer: ``log P(line | u) - log Z_ul`` per line | ``log w_us`` per scale | 0... | 1, with
  ``Z_ul = sum_s P(s | l) w_us`` the scale step's normaliser;
* new customer (the encoder's ``customer=*@<country>`` token; ``customer=*`` when the country is
  unknown): the same with the country's shares and tilt; when their event browsed products, those
  count as purchases would, shrunk towards the country by the same priors (the encoder's session
  fold, ``vectors/session.py``, published in the spec).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from retail_platform.recommender.data import TrainingData
from retail_platform.recommender.gate import TASTE
from retail_platform.recommender.model import FittedModel, TrainParams, feature_spec
from retail_platform.vectors.encoder import BIAS_COLUMN, IMPUTED_ID, SUM, norm_text
from retail_platform.vectors.session import SPEC_KEY, SessionFold, taste_user_vectors

UNBOUGHT = 0.5  # a product nobody bought yet counts this many buyers in its group's shares


def _index_of(values: pd.Series, names: list[str]) -> np.ndarray:
    return pd.Index(names).get_indexer(values)


def _tilt(bought: np.ndarray, expected: np.ndarray, prior: np.ndarray, strength: float) -> np.ndarray:
    """Scale tilt: bought over expected, shrunk towards ``prior`` (rows: customers or countries)."""
    return (bought + strength * prior) / (expected + strength)


def fit_taste(data: TrainingData, interactions: pd.DataFrame, params: TrainParams) -> FittedModel:
    started, cpu_started = time.perf_counter(), time.thread_time()
    products = pd.Index(data.products.index)
    lines_of = data.products["productLine"].map(norm_text).fillna("").reindex(products)
    scales_of = data.products["productScale"].map(norm_text).fillna("").reindex(products)
    lines, scales = sorted(set(lines_of)), sorted(set(scales_of))
    if len(lines) + len(scales) + 1 > BIAS_COLUMN + 1:
        raise ValueError(
            f"{len(lines)} product lines and {len(scales)} scales do not fit a {BIAS_COLUMN + 1}-float vector"
        )
    line_of, scale_of = _index_of(lines_of, lines), _index_of(scales_of, scales)
    n_lines, n_scales = len(lines), len(scales)

    pairs = interactions.drop_duplicates(["customer_number", "product_code"])
    col = products.get_indexer(pairs["product_code"])
    pairs, col = pairs[col >= 0], col[col >= 0]
    customers = np.sort(pairs["customer_number"].unique()).astype(np.int64)
    row = pd.Index(customers).get_indexer(pairs["customer_number"])
    country_names = data.customers["country"].map(norm_text).fillna("")
    countries = sorted(set(country_names.reindex(customers).fillna("")))
    country_of = _index_of(country_names.reindex(customers).fillna(""), countries)

    # Counts: customers x lines, customers x scales; products' buyers.
    by_line = np.zeros((len(customers), n_lines))
    np.add.at(by_line, (row, line_of[col]), 1.0)
    by_scale = np.zeros((len(customers), n_scales))
    np.add.at(by_scale, (row, scale_of[col]), 1.0)
    buyers = np.bincount(col, minlength=len(products)).astype(float)

    # P(scale | line): the share of each line's purchases in each scale (groups the catalogue lacks: 0).
    group = np.zeros((n_lines, n_scales))
    np.add.at(group, (line_of, scale_of), buyers + UNBOUGHT)
    scale_given_line = group / group.sum(axis=1, keepdims=True)

    # Countries: line shares (shrunk towards everyone's), scale tilt (towards none).
    overall_lines = (by_line.sum(axis=0) + 1.0) / (by_line.sum() + n_lines)
    country_lines = np.zeros((len(countries), n_lines))
    np.add.at(country_lines, country_of, by_line)
    country_scales = np.zeros((len(countries), n_scales))
    np.add.at(country_scales, country_of, by_scale)
    country_line_share = (country_lines + params.country_prior * overall_lines) / (
        country_lines.sum(axis=1, keepdims=True) + params.country_prior
    )
    country_tilt = _tilt(country_scales, country_lines @ scale_given_line, 1.0, params.country_prior)

    # Customers: shrunk towards their country.
    a, b = params.line_prior, params.scale_prior
    line_share = (by_line + a * country_line_share[country_of]) / (by_line.sum(axis=1, keepdims=True) + a)
    tilt = _tilt(by_scale, by_line @ scale_given_line, country_tilt[country_of], b)

    def user_block(shares: np.ndarray, tilts: np.ndarray, bias: float) -> np.ndarray:
        return taste_user_vectors(shares, tilts, scale_given_line, bias, BIAS_COLUMN + 1)

    users = user_block(line_share, tilt, 1.0)
    every_tilt = _tilt(
        by_scale.sum(axis=0), (by_line @ scale_given_line).sum(axis=0), 1.0, params.country_prior
    )
    prior_shares = np.vstack([country_line_share, overall_lines])
    prior_tilts = np.vstack([country_tilt, every_tilt])
    features = user_block(prior_shares, prior_tilts, 0.0)
    names = tuple(f"{IMPUTED_ID}@{c}" for c in countries) + (IMPUTED_ID,)
    session = SessionFold(
        n_lines,
        n_scales,
        float(a),
        float(b),
        scale_given_line,
        dict(zip(names, prior_shares, strict=True)),
        dict(zip(names, prior_tilts, strict=True)),
    )

    share_in_group = (buyers + UNBOUGHT) / group[line_of, scale_of]
    with np.errstate(divide="ignore"):
        bias = np.log(scale_given_line[line_of, scale_of]) + np.log(share_in_group)
    items = np.zeros((len(products), BIAS_COLUMN + 1), np.float32)
    items[np.arange(len(products)), line_of] = 1.0
    items[np.arange(len(products)), n_lines + scale_of] = 1.0
    items[:, BIAS_COLUMN] = bias

    # A product nobody bought yet (published from the catalogue), embedded from its tokens summed: its
    # line, its scale, and half a buyer among its line's (the line's row carries that bias less the
    # scale row's; a product of a line the version never saw gets half a buyer among everyone's).
    item_names = [f"line={line}" for line in lines] + [f"scale={scale}" for scale in scales]
    item_features = np.zeros((len(item_names), BIAS_COLUMN + 1), np.float32)
    item_features[np.arange(n_lines), np.arange(n_lines)] = 1.0
    item_features[n_lines + np.arange(n_scales), n_lines + np.arange(n_scales)] = 1.0
    anywhere = np.log(UNBOUGHT / group.sum())
    item_features[:n_lines, BIAS_COLUMN] = np.log(UNBOUGHT / group.sum(axis=1)) - anywhere
    item_features[n_lines:, BIAS_COLUMN] = anywhere
    spec = feature_spec(data, params.buckets) | {
        "weights": SUM,
        "recipe": TASTE,
        SPEC_KEY: session.to_spec(),
    }
    return FittedModel(
        params=params,
        spec=spec,
        customer_numbers=customers,
        user_vectors=users,
        product_codes=tuple(products),
        item_vectors=items,
        user_feature_names=names,
        user_feature_vectors=features,
        item_feature_names=tuple(item_names),
        item_feature_vectors=item_features,
        lightfm_state={},
        train_seconds=time.perf_counter() - started,
        train_cpu_seconds=time.thread_time() - cpu_started,
    )
