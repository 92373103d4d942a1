"""The gate: a model is published only when it beats popularity and does not fall behind production.

Both rules read NDCG@10 for known customers (the figure the model is trained to move):

1. it beats the popularity baseline by at least ``margin`` (a fraction): last week's popular list, as
   served today (``popular_7d``), or, stricter, the best of that, popularity over the training
   period and popularity in the customer's country (``best``);
2. it is at most ``tolerance`` (a fraction) below the model now in production, measured on the
   same test period, or, when production saw that period, as recorded at its own evaluation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

POPULARITY_METHODS = ("popular_7d", "popularity", "popular_by_country")
SERVED_TODAY, BEST = "popular_7d", "best"
MODEL, PRODUCTION = "model", "production"


@dataclass(frozen=True)
class GateDecision:
    approved: bool
    reasons: list[str] = field(default_factory=list)
    model_ndcg: float = 0.0
    best_popularity: str = ""
    popularity_ndcg: float = 0.0
    production_ndcg: float | None = None
    production_basis: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "approved" if self.approved else "refused"
        return f"{verdict}: " + "; ".join(self.reasons)


def decide(
    known: dict[str, float],
    *,
    margin: float,
    tolerance: float,
    baseline: str = SERVED_TODAY,
    production_ndcg: float | None = None,
    production_basis: str | None = None,
) -> GateDecision:
    """``known``: NDCG@10 for known customers by method (``model`` and the popularity methods)."""
    model = known[MODEL]
    methods = POPULARITY_METHODS if baseline == BEST else (SERVED_TODAY,)
    baselines = {m: known[m] for m in methods if m in known}
    best = max(baselines, key=baselines.get)
    needed = baselines[best] * (1 + margin)
    reasons, approved = [], True
    if model >= needed:
        reasons.append(f"NDCG@10 {model:.4f} beats {best} {baselines[best]:.4f} by {margin:.0%} or more")
    else:
        approved = False
        reasons.append(
            f"NDCG@10 {model:.4f} does not beat {best} {baselines[best]:.4f} by {margin:.0%} "
            f"(needs {needed:.4f})"
        )
    if production_ndcg is not None:
        floor = production_ndcg * (1 - tolerance)
        if model >= floor:
            reasons.append(
                f"not worse than production {production_ndcg:.4f} ({production_basis}) beyond {tolerance:.0%}"
            )
        else:
            approved = False
            reasons.append(
                f"NDCG@10 {model:.4f} is more than {tolerance:.0%} below production {production_ndcg:.4f} "
                f"({production_basis}; needs {floor:.4f})"
            )
    return GateDecision(approved, reasons, model, best, baselines[best], production_ndcg, production_basis)
