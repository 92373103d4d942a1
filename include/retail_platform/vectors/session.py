"""What a shopper the model never saw browses, folded into their vector (the taste model's encoder).

A new customer is known by their country until they look at something. The sales platform's event
carries their browse history and cart, and for the taste model a browsed product is evidence of the
same kind as a purchase: the shopper's line shares and scale tilt are estimated exactly as a known
customer's are (``recommender/taste.py``), with the browsed products in place of purchases, shrunk
towards the country by the model's own priors:

    P(line | u) = (n_l + a * P(line | country)) / (n + a)
    w_s        = (m_s + b * w_cs) / (E_s + b),   E_s = sum over browsed products of P(s | their line)

and the vector is ``log P(line | u) - log Z_l`` per line | ``log w_s`` per scale | 1, as a known
customer's. With nothing browsed it is the country's vector. Measured (docs/parts/recommender.md):
with one product in the cart, a new shopper's NDCG@10 rises significantly above popularity in their
country, where the country alone cannot.

A browsed product's line and scale are read from its item vector's one-hot blocks (the taste model's
item vectors, and those the publish step embeds from features, carry them); a product whose blocks
are not one-hot is left out. Pure numpy: the serving side imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPEC_KEY = "session"  # where a published encoder's spec carries the fold


def taste_user_vectors(
    shares: np.ndarray, tilts: np.ndarray, scale_given_line: np.ndarray, bias: float, dimensions: int
) -> np.ndarray:
    """Taste-model user vectors (rows): ``log P(line | u) - log Z_l`` per line | ``log w_s`` per scale
    | 0... | ``bias``, with ``Z_l = sum_s P(s | l) w_s``. One home for the layout: the fit's known
    customers and countries, and the fold's shoppers."""
    shares, tilts = np.atleast_2d(shares), np.atleast_2d(tilts)
    lines, scales = scale_given_line.shape
    out = np.zeros((len(shares), dimensions), np.float32)
    out[:, :lines] = np.log(shares) - np.log(tilts @ scale_given_line.T)
    out[:, lines : lines + scales] = np.log(tilts)
    out[:, dimensions - 1] = bias
    return out


@dataclass(frozen=True)
class SessionFold:
    lines: int
    scales: int
    line_prior: float
    scale_prior: float
    scale_given_line: np.ndarray  # (lines, scales): P(scale | line)
    # By the encoder's imputed-id token (``customer=*@<country>``, ``customer=*``): the shopper's prior.
    line_share: dict[str, np.ndarray]
    tilt: dict[str, np.ndarray]

    def to_spec(self) -> dict:
        return {
            "lines": self.lines,
            "scales": self.scales,
            "line_prior": self.line_prior,
            "scale_prior": self.scale_prior,
            "scale_given_line": self.scale_given_line.tolist(),
            "line_share": {token: v.tolist() for token, v in self.line_share.items()},
            "tilt": {token: v.tolist() for token, v in self.tilt.items()},
        }

    @classmethod
    def from_spec(cls, spec: dict) -> SessionFold | None:
        fold = spec.get(SPEC_KEY)
        if not fold:
            return None
        return cls(
            int(fold["lines"]),
            int(fold["scales"]),
            float(fold["line_prior"]),
            float(fold["scale_prior"]),
            np.asarray(fold["scale_given_line"], dtype=np.float64),
            {token: np.asarray(v, np.float64) for token, v in fold["line_share"].items()},
            {token: np.asarray(v, np.float64) for token, v in fold["tilt"].items()},
        )

    def groups(self, browsed_items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each browsed product's line and scale index, from its item vector (rows not one-hot in both
        blocks are left out)."""
        items = np.asarray(browsed_items, np.float64).reshape(-1, browsed_items.shape[-1])
        line_block = items[:, : self.lines]
        scale_block = items[:, self.lines : self.lines + self.scales]
        one_hot = (
            np.isclose(line_block.max(axis=1), 1.0)
            & np.isclose(line_block.sum(axis=1), 1.0)
            & np.isclose(scale_block.max(axis=1), 1.0)
            & np.isclose(scale_block.sum(axis=1), 1.0)
        )
        return line_block[one_hot].argmax(axis=1), scale_block[one_hot].argmax(axis=1)

    def vector(self, token: str, browsed_items: np.ndarray, dimensions: int) -> np.ndarray | None:
        """The shopper's vector from their prior (``token``) and what they browsed; None when the
        token has no prior."""
        if token not in self.line_share:
            return None
        lines, scales = self.groups(browsed_items)
        n_line = np.bincount(lines, minlength=self.lines).astype(np.float64)
        n_scale = np.bincount(scales, minlength=self.scales).astype(np.float64)
        a, b = self.line_prior, self.scale_prior
        share = (n_line + a * self.line_share[token]) / (n_line.sum() + a)
        tilt = (n_scale + b * self.tilt[token]) / (n_line @ self.scale_given_line + b)
        return taste_user_vectors(share, tilt, self.scale_given_line, 1.0, dimensions)[0]
