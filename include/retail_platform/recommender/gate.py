"""The gate: a version is published only when it is materially better than popularity, better than
every baseline a data scientist tries first, for known and for new customers, and no worse than
production.

Each rule reads NDCG@10 per customer, so differences are *paired* (the same customers, their own
figures), with a 95% interval:

1. known customers: the model's mean beats the best popularity baseline (the popular list as served,
   popularity, popularity by country: what customers get without a model) by at least ``margin``
   (a fraction);
2. known customers: the paired difference with the best baseline of all (those, the favourite
   line and its line x scale variant, item-item co-occurrence; never the model's own recipe) lies
   above zero (its interval's lower bound);
3. new customers, and new customers with one product in the cart (the evaluation's
   ``new_with_cart``: the baselines read the cart as the customer's history): the model is not
   measurably worse than the best baseline for them (the paired difference's upper bound is not
   below zero; a segment of one customer has no interval and is not gated);
4. known customers: the model is at most ``tolerance`` (a fraction) below the model in production,
   measured on the same test period, or, when production saw that period, as recorded at its own
   evaluation.

**Small samples** (rule 2): when the interval is wider than the margin itself (its half-width above
``margin`` x the baseline's mean: too few customers to tell a lead of that size from chance), a
model ahead of the best baseline by point estimate passes *provisionally*: the decision carries
``provisional: not significant at n=<customers>`` (in the registry, the report and the alert), and
the next retraining on more data decides again. A model significantly behind any baseline (known
or new customers) is refused whatever the sample; with enough customers to resolve the margin, an
interval that reaches zero is refused.

``baseline="popular_7d"`` narrows rules 1-3 to the popular list as served. Every reason names the
baseline, both means and the paired difference with its interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from retail_platform.recommender.evaluation import KNOWN, NEW, NEW_WITH_CART, SEGMENT_LABELS, Estimate, paired

MODEL, PRODUCTION = "model", "production"
SERVED_TODAY, BEST = "popular_7d", "best"
POPULARITY = ("popular_7d", "popularity", "popular_by_country")  # what serves without a model
BASELINES = (*POPULARITY, "favourite_line", "line_x_scale", "cooccurrence")
LIGHTFM, FAVOURITE_LINE, TASTE, AUTO = "lightfm", "favourite_line", "taste", "auto"
# auto: the taste model; LightFM when the gate refuses it; the favourite line when it refuses both.
RECIPES = (AUTO, TASTE, LIGHTFM, FAVOURITE_LINE)
# A model is not compared with itself: the served heuristic is not gated against its own variants.
OWN_FAMILY = {FAVOURITE_LINE: {"favourite_line", "line_x_scale"}, LIGHTFM: set(), TASTE: set()}


@dataclass(frozen=True)
class GateRules:
    margin: float
    tolerance: float
    baseline: str = BEST
    recipe: str = LIGHTFM

    def comparison_set(self) -> tuple[str, ...]:
        """The baselines of rules 2 and 3."""
        if self.baseline == SERVED_TODAY:
            return (SERVED_TODAY,)
        return tuple(b for b in BASELINES if b not in OWN_FAMILY.get(self.recipe, set()))

    def margin_set(self) -> tuple[str, ...]:
        """The baselines of rule 1."""
        return (SERVED_TODAY,) if self.baseline == SERVED_TODAY else POPULARITY


@dataclass(frozen=True)
class Comparison:
    segment: str
    baseline: str
    model_ndcg: float
    baseline_ndcg: float
    difference: Estimate  # paired, model - baseline
    customers: int = 0

    def describe(self) -> str:
        return (
            f"{SEGMENT_LABELS[self.segment]}: NDCG@10 {self.model_ndcg:.4f} vs {self.baseline} "
            f"{self.baseline_ndcg:.4f}, paired difference {self.difference}"
        )


@dataclass(frozen=True)
class GateDecision:
    approved: bool
    reasons: list[str] = field(default_factory=list)
    model_ndcg: float = 0.0
    best_baseline: str = ""
    baseline_ndcg: float = 0.0
    comparisons: list[Comparison] = field(default_factory=list)
    production_ndcg: float | None = None
    production_basis: str | None = None
    # Set when approved on a lead the sample is too small to make significant: "provisional: ...".
    provisional: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "approved" if self.approved else "refused"
        if self.approved and self.provisional:
            verdict += f" ({self.provisional})"
        return f"{verdict}: " + "; ".join(self.reasons)


def best_baseline(segment: str, scores: dict[str, np.ndarray], among: tuple[str, ...]) -> Comparison | None:
    """The comparison with the strongest baseline of ``among`` (by mean NDCG@10) in a segment."""
    candidates = [b for b in among if b in scores]
    if MODEL not in scores or not candidates or len(scores[MODEL]) == 0:
        return None
    best = max(candidates, key=lambda b: float(np.mean(scores[b])))
    model, base = scores[MODEL], scores[best]
    return Comparison(
        segment, best, float(np.mean(model)), float(np.mean(base)), paired(model, base), len(model)
    )


def _margin_rule(c: Comparison, margin: float) -> tuple[bool, str]:
    needed = c.baseline_ndcg * (1 + margin)
    beats = c.model_ndcg >= needed
    verdict = "beats" if beats else "does not beat"
    return beats, f"{c.describe()}: {verdict} {c.baseline} by {margin:.0%} (needs {needed:.4f})"


def provisional_note(c: Comparison) -> str:
    return f"provisional: not significant at n={c.customers}"


def _too_few_to_tell(c: Comparison, margin: float) -> bool:
    """The interval is wider than the margin: this many customers cannot tell such a lead from chance."""
    half_width = (c.difference.high - c.difference.low) / 2
    return half_width > margin * c.baseline_ndcg


def _paired_rule(c: Comparison, margin: float) -> tuple[bool, str, str | None]:
    """Above zero; or, on a sample too small to resolve the margin, ahead by point estimate and not
    significantly behind: passed provisionally."""
    if c.difference.low > 0:
        return True, f"{c.describe()}: above zero", None
    if c.difference.high < 0:
        return False, f"{c.describe()}: below zero ({c.baseline} is better)", None
    if c.difference.mean >= 0 and _too_few_to_tell(c, margin):
        note = provisional_note(c)
        return (
            True,
            (
                f"{c.describe()}: not above zero, ahead by point estimate, and {c.customers} customers "
                f"cannot resolve a {margin:.0%} lead (half-width {(c.difference.high - c.difference.low) / 2:.4f} "
                f"> {margin * c.baseline_ndcg:.4f}): {note}"
            ),
            note,
        )
    return False, f"{c.describe()}: not above zero", None


def _new_rule(c: Comparison | None, segment: str = NEW) -> tuple[bool, str]:
    if c is None:
        return True, f"{SEGMENT_LABELS[segment]}: none in the test period (not gated)"
    if c.customers < 2:  # one customer's figure has no interval: it cannot be significantly worse
        return True, f"{c.describe()}: one customer, no interval (not gated)"
    worse = c.difference.high < 0
    return (not worse), f"{c.describe()}: " + ("worse than" if worse else "not worse than") + f" {c.baseline}"


def _production_rule(model: float, production: float, basis: str | None, tolerance: float):
    floor = production * (1 - tolerance)
    if model >= floor:
        return True, f"not worse than production {production:.4f} ({basis}) beyond {tolerance:.0%}"
    return False, (
        f"NDCG@10 {model:.4f} is more than {tolerance:.0%} below production {production:.4f} "
        f"({basis}; needs {floor:.4f})"
    )


def decide(
    scores: dict[str, dict[str, np.ndarray]],
    rules: GateRules,
    *,
    production_ndcg: float | None = None,
    production_basis: str | None = None,
) -> GateDecision:
    """``scores``: per-customer NDCG@10 by segment (``known``, ``new``, ``new_with_cart``) and method (``model`` and the
    baselines), each method's array over the same customers in the same order."""
    known_scores = scores.get(KNOWN, {})
    popular = best_baseline(KNOWN, known_scores, rules.margin_set())
    known = best_baseline(KNOWN, known_scores, rules.comparison_set())
    if popular is None or known is None:
        raise ValueError(
            f"the gate needs the model and {', '.join(rules.comparison_set())} for known customers"
        )
    new = best_baseline(NEW, scores.get(NEW, {}), rules.comparison_set())
    with_cart = best_baseline(NEW_WITH_CART, scores.get(NEW_WITH_CART, {}), rules.comparison_set())
    paired_ok, paired_reason, provisional = _paired_rule(known, rules.margin)
    checks = [
        _margin_rule(popular, rules.margin),
        (paired_ok, paired_reason),
        _new_rule(new),
        _new_rule(with_cart, NEW_WITH_CART),
    ]
    if production_ndcg is not None:
        checks.append(_production_rule(known.model_ndcg, production_ndcg, production_basis, rules.tolerance))
    failed = [reason for ok, reason in checks if not ok]
    passed = [reason for ok, reason in checks if ok]
    return GateDecision(
        approved=not failed,
        provisional=provisional if not failed else None,
        reasons=failed + passed,  # why it was refused first
        model_ndcg=known.model_ndcg,
        best_baseline=known.baseline,
        baseline_ndcg=known.baseline_ndcg,
        comparisons=[c for c in (popular, known, new, with_cart) if c is not None],
        production_ndcg=production_ndcg,
        production_basis=production_basis,
    )
