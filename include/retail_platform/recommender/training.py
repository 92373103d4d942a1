"""One retraining: read a training build, evaluate the recipe on a time split, gate, register.

1. read and validate the export build (``data.training_data``);
2. split it in time; train on the past; rank the test period for known and new customers beside
   the baselines, the production model and (on generated data) the ceiling;
3. the gate decides;
4. train the same recipe on the whole build (the version that would serve: fitted in a thread
   beside the evaluation, LightFM releases the GIL) and write it to the registry with the
   evaluation and the decision in its manifest (refused versions too).

The recipe (``RETAIL_RECOMMENDER_MODEL``) is the taste model (``taste.py``), LightFM (``model.py``)
or the favourite-line heuristic (``heuristic.py``); all publish the same 32-dimension vectors.

Publishing is a separate step (``publishing.py``): only an approved version, or one an operator
names, reaches the vector database.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from retail_platform.recommender import evaluation as ev
from retail_platform.recommender.ceiling import ceiling_scorer
from retail_platform.recommender.data import TrainingData, training_data
from retail_platform.recommender.gate import (
    AUTO,
    FAVOURITE_LINE,
    LIGHTFM,
    MODEL,
    PRODUCTION,
    TASTE,
    GateDecision,
    GateRules,
    decide,
)
from retail_platform.recommender.heuristic import fit_heuristic
from retail_platform.recommender.model import FittedModel, TrainParams, fit
from retail_platform.recommender.registry import Registry, code_version, new_version_id
from retail_platform.recommender.settings import RecommenderSettings
from retail_platform.recommender.taste import fit_taste
from retail_platform.vectors.catalogue import embed_product
from retail_platform.vectors.model import ModelVersion, UserFeatures
from retail_platform.warehouse.export import read_export

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Production:
    """The model serving now, as the evaluation sees it."""

    version: str
    model: ModelVersion | None  # its published vectors, when it did not see the test period
    recorded: dict | None  # else its own evaluation's NDCG@10 by segment


@dataclass(frozen=True)
class TrainingOutcome:
    version: str
    build_id: str
    approved: bool
    gate: GateDecision
    report: str
    path: str
    timings: dict

    def to_dict(self) -> dict:
        return asdict(self) | {"gate": self.gate.to_dict()}


def params_from(settings: RecommenderSettings) -> TrainParams:
    return TrainParams(
        recipe=recipes_of(settings)[0],
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        threads=settings.threads,
    )


def train(data: TrainingData, interactions: pd.DataFrame, params: TrainParams) -> FittedModel:
    """Fit the recipe ``params.recipe`` on ``interactions``."""
    if params.recipe == FAVOURITE_LINE:
        return fit_heuristic(data, interactions, params)
    if params.recipe == TASTE:
        return fit_taste(data, interactions, params)
    return fit(data, interactions, params)


def _embedder(data: TrainingData, encode):
    """A customer without a published vector, embedded from what an event carries about them (and
    the item vectors of what it browsed, the cart)."""

    def embed(customer_number: int, browsed: np.ndarray | None = None) -> np.ndarray:
        if customer_number in data.customers.index:
            return encode(ev.as_served(data.user_features(customer_number)), browsed)
        return encode(UserFeatures(customer_number, None, None, None, None), browsed)

    return embed


def _served_items(data: TrainingData, model: FittedModel) -> tuple[tuple[str, ...], np.ndarray]:
    """The model's products and vectors as publishing makes them: the catalogue's unseen products
    get a vector from their features (``vectors.catalogue``)."""
    if not data.unseen:
        return model.product_codes, model.item_vectors
    index = {name: i for i, name in enumerate(model.item_feature_names)}
    extra = [embed_product(f, model.spec, index, model.item_feature_vectors) for f in data.unseen]
    codes = model.product_codes + tuple(f.product_code for f in data.unseen)
    return codes, np.vstack([model.item_vectors, np.asarray(extra, np.float32)])


def _model_scorer(data: TrainingData, model: FittedModel) -> ev.Scorer:
    codes, items = _served_items(data, model)
    embed = _embedder(data, model.encoder().embed)
    return ev.vectors_scorer(
        model.customer_numbers, model.user_vectors, codes, items, embed, ev.catalogue_index(data)
    )


def _reference_scorers(data: TrainingData, split: ev.Split, production: Production | None, settings):
    """Everything the model is compared with: production, the baselines, the ceiling."""
    products = ev.catalogue_index(data)
    scorers = {}
    if production is not None and production.model is not None:
        m = production.model
        scorers[PRODUCTION] = ev.vectors_scorer(
            m.customer_numbers,
            m.user_vectors,
            m.product_codes,
            m.item_vectors,
            _embedder(data, m.encoder.embed),
            products,
        )
    scorers |= ev.baseline_scorers(data, split, products)
    ceiling = ceiling_scorer(settings.ground_truth_dir, products)
    if ceiling is not None:
        scorers["ceiling"] = ceiling
    return scorers


def _evaluate_scorers(data, split, scorers: dict) -> list[ev.MethodResult]:
    products = ev.catalogue_index(data)
    results = []
    for segment, customers, carts in split.segments(products):
        for name, scorer in scorers.items():
            if len(customers):
                results.append(ev.evaluate_method(name, segment, scorer, customers, split, products, carts))
    return results


def evaluate(data, split, model, production, settings) -> list[ev.MethodResult]:
    scorers = {MODEL: _model_scorer(data, model)} | _reference_scorers(data, split, production, settings)
    return _evaluate_scorers(data, split, scorers)


def format_report(results: list[ev.MethodResult], production: Production | None = None) -> str:
    lines = [
        f"{'method':<20} {'customers':>9}  {'NDCG@10 [95% CI]':<26} {'recall@10 [95% CI]':<26} coverage"
        "  model - method, paired [95% CI]"
    ]
    for segment in ev.SEGMENTS:
        rows = [r for r in results if r.segment == segment]
        if rows:
            lines.append(ev.SEGMENT_LABELS[segment])
        model = next((r for r in rows if r.method == MODEL), None)
        for r in rows:
            diff = "" if model is None or r is model else f"  {ev.paired(model.per_customer, r.per_customer)}"
            lines.append(
                f"  {r.method:<18} {r.customers:>9,}  {r.ndcg.mean:.4f} [{r.ndcg.low:.4f}, {r.ndcg.high:.4f}]"
                f"   {r.recall.mean:.4f} [{r.recall.low:.4f}, {r.recall.high:.4f}]   {r.coverage:.3f}{diff}"
            )
    if production is not None and production.model is None and production.recorded:
        recorded = ", ".join(f"{k} {v:.4f}" for k, v in production.recorded.items())
        lines.append(
            f"production {production.version} saw this test period: "
            f"NDCG@10 as recorded at its own evaluation: {recorded}"
        )
    return "\n".join(lines)


def _summary(results: list[ev.MethodResult]) -> dict:
    """NDCG@10 by method and segment (what the next version's gate compares with, if needed)."""
    summary: dict[str, dict[str, float]] = {}
    for r in results:
        summary.setdefault(r.method, {})[r.segment] = r.ndcg.mean
    return summary


def production_reference(registry: Registry, conninfo: str | None, cutoff: pd.Timestamp) -> Production | None:
    """The published version: its vectors if its data ended before the split, else its recorded figures."""
    if conninfo is None:
        return None
    from retail_platform.vectors.store import load_current

    model, _ = load_current(conninfo)
    if model is None:
        return None
    manifest = registry.manifest(model.version) or {}
    through = manifest.get("data_through")
    if through is not None and pd.Timestamp(through) < cutoff:
        return Production(model.version, model, None)
    recorded = (manifest.get("evaluation") or {}).get("summary", {}).get(MODEL)
    return Production(model.version, None, recorded or None)


def _gate(results, production: Production | None, settings: RecommenderSettings, recipe: str) -> GateDecision:
    known = {r.method: r.ndcg.mean for r in results if r.segment == ev.KNOWN}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for r in results:
        scores.setdefault(r.segment, {})[r.method] = r.per_customer
    prod_ndcg, basis = None, None
    if production is not None:
        if PRODUCTION in known:
            prod_ndcg, basis = known[PRODUCTION], f"version {production.version} on this test period"
        elif production.recorded and ev.KNOWN in production.recorded:
            prod_ndcg = production.recorded[ev.KNOWN]
            basis = f"version {production.version} as recorded at its own evaluation"
    rules = GateRules(
        margin=settings.gate_margin,
        tolerance=settings.gate_tolerance,
        baseline=settings.gate_baseline,
        recipe=recipe,
    )
    return decide(
        scores,
        rules,
        production_ndcg=prod_ndcg,
        production_basis=basis,
    )


def _evaluation_doc(split: ev.Split, settings, production: Production | None, results, report: str) -> dict:
    return {
        "split": {
            "cutoff": str(split.cutoff),
            "test_fraction": settings.test_fraction,
            "train_interactions": len(split.train),
            "test_interactions": len(split.test),
            "known_customers": len(split.known),
            "new_customers": len(split.new),
            "new_customers_with_a_cart": len(split.carts),
        },
        "production": production.version if production else None,
        "results": [r.to_dict() for r in results],
        "summary": _summary(results),
        "report": report,
    }


@dataclass(frozen=True)
class Candidate:
    """One recipe trained on the split, evaluated and gated."""

    params: TrainParams
    results: list[ev.MethodResult]
    gate: GateDecision
    timings: dict

    def to_dict(self) -> dict:
        return {"recipe": self.params.recipe, "approved": self.gate.approved, "reasons": self.gate.reasons}


def recipes_of(settings: RecommenderSettings) -> tuple[str, ...]:
    """The recipes a run tries, in order until the gate approves one: ``auto`` tries the taste model
    (the best measured), then LightFM, then the favourite-line heuristic."""
    return (TASTE, LIGHTFM, FAVOURITE_LINE) if settings.model == AUTO else (settings.model,)


def _merged(model: list[ev.MethodResult], references: list[ev.MethodResult]) -> list[ev.MethodResult]:
    """The model's row first in each segment, then the references'."""
    return [r for segment in ev.SEGMENTS for r in (*model, *references) if r.segment == segment]


def _candidate(data, split, params: TrainParams, references, production, settings) -> Candidate:
    model = train(data, split.train, params)
    mark, cpu = time.perf_counter(), time.thread_time()
    results = _merged(_evaluate_scorers(data, split, {MODEL: _model_scorer(data, model)}), references)
    timings = {
        "train_split_s": model.train_seconds,
        "train_split_cpu_s": model.train_cpu_seconds,
        "evaluate_model_s": time.perf_counter() - mark,
        "evaluate_model_cpu_s": time.thread_time() - cpu,
    }
    return Candidate(params, results, _gate(results, production, settings, params.recipe), timings)


def _choose(data, split, production, settings, params: TrainParams):
    """Evaluate the references once, then each recipe until the gate approves one (the final fit of
    the first recipe runs meanwhile in a thread: LightFM releases the GIL). Returns the chosen
    candidate, every candidate tried, the final fit and the references' timings."""
    recipes = recipes_of(settings)
    with ThreadPoolExecutor(1, thread_name_prefix="final-fit") as pool:
        final_fit = pool.submit(train, data, data.interactions, replace(params, recipe=recipes[0]))
        mark, cpu = time.perf_counter(), time.thread_time()
        references = _evaluate_scorers(data, split, _reference_scorers(data, split, production, settings))
        timings = {"evaluate_s": time.perf_counter() - mark, "evaluate_cpu_s": time.thread_time() - cpu}
        tried = []
        for recipe in recipes:
            tried.append(
                _candidate(data, split, replace(params, recipe=recipe), references, production, settings)
            )
            if tried[-1].gate.approved:
                break
        chosen = next((c for c in tried if c.gate.approved), tried[0])
        final = final_fit.result()
    if chosen.params.recipe != recipes[0]:
        final = train(data, data.interactions, chosen.params)
    return chosen, tried, final, timings


def train_version(
    settings: RecommenderSettings,
    *,
    build_id: str | None = None,
    conninfo: str | None = None,
    data: TrainingData | None = None,
) -> TrainingOutcome:
    """Evaluate, gate and register one version trained on a build (the newest by default)."""
    timings, started, cpu_started = {}, time.perf_counter(), time.process_time()
    data = data or training_data(read_export(settings.platform, build_id))
    timings["read_s"] = time.perf_counter() - started
    split = ev.time_split(data, settings.test_fraction)
    registry = Registry.from_settings(settings.platform)
    production = production_reference(registry, conninfo, split.cutoff)
    chosen, tried, final, evaluation_timings = _choose(
        data, split, production, settings, params_from(settings)
    )
    timings |= evaluation_timings | chosen.timings
    gate, results = chosen.gate, chosen.results
    report = format_report(results, production)
    for other in (c for c in tried if c is not chosen):
        report += f"\nalso tried: {other.params.recipe} ({other.gate.summary()})"
    log.info(
        "evaluation of build %s (split at %s, recipe %s):\n%s\ngate: %s",
        data.build_id,
        split.cutoff,
        chosen.params.recipe,
        report,
        gate.summary(),
    )
    timings["train_final_s"] = final.train_seconds
    timings["train_final_cpu_s"] = final.train_cpu_seconds
    version = new_version_id()
    mark = time.perf_counter()
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "status": "approved" if gate.approved else "refused",
        "provisional": gate.provisional,  # "provisional: not significant at n=..." or None
        "training_build": data.build_id,
        "data_through": str(data.interactions["last_ordered_at"].max()),  # repeats included
        "code": code_version(),
        "recipe": chosen.params.recipe,
        "params": chosen.params.to_dict(),
        "encoder": final.spec,
        "evaluation": _evaluation_doc(split, settings, production, results, report),
        "gate": gate.to_dict(),
        "candidates": [c.to_dict() for c in tried],
        "timings": timings,
    }
    path = registry.write(version, final, manifest)
    timings["write_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    timings["total_cpu_s"] = time.process_time() - cpu_started  # every thread of this process
    return TrainingOutcome(version, data.build_id, gate.approved, gate, report, path, timings)
