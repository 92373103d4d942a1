"""One retraining: read a training build, evaluate the recipe on a time split, gate, register.

1. read and validate the export build (``data.training_data``);
2. split it in time; train on the past; rank the test period for known and new customers beside
   the baselines, the production model and (on generated data) the ceiling;
3. the gate decides;
4. train the same recipe on the whole build (the version that would serve) and write it to the
   registry with the evaluation and the decision in its manifest (refused versions too).

Publishing is a separate step (``publishing.py``): only an approved version, or one an operator
names, reaches the vector database.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from retail_platform.recommender import evaluation as ev
from retail_platform.recommender.ceiling import ceiling_scorer
from retail_platform.recommender.data import TrainingData, training_data
from retail_platform.recommender.gate import MODEL, PRODUCTION, GateDecision, decide
from retail_platform.recommender.model import FittedModel, TrainParams, fit
from retail_platform.recommender.registry import Registry, code_version, new_version_id
from retail_platform.recommender.settings import RecommenderSettings
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
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        threads=settings.threads,
    )


def _embedder(data: TrainingData, encode):
    def embed(customer_number: int) -> np.ndarray:
        if customer_number in data.customers.index:
            return encode(data.user_features(customer_number))
        return encode(UserFeatures(customer_number, None, None, None, None))

    return embed


def _scorers(
    data: TrainingData, split: ev.Split, model: FittedModel, production: Production | None, settings
):
    products = pd.Index(data.products.index)
    encoder = model.encoder()
    scorers = {
        MODEL: ev.vectors_scorer(
            model.customer_numbers,
            model.user_vectors,
            model.product_codes,
            model.item_vectors,
            _embedder(data, encoder.embed),
            products,
        ),
    }
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
    scorers["popular_7d"] = ev.last_week_scorer(split, products)
    scorers["popularity"] = ev.popularity_scorer(split, products)
    scorers["popular_by_country"] = ev.country_scorer(data, split, products)
    ceiling = ceiling_scorer(settings.ground_truth_dir, products)
    if ceiling is not None:
        scorers["ceiling"] = ceiling
    return scorers


def evaluate(data, split, model, production, settings) -> list[ev.MethodResult]:
    products = pd.Index(data.products.index)
    results = []
    for segment, customers in ((ev.KNOWN, split.known), (ev.NEW, split.new)):
        for name, scorer in _scorers(data, split, model, production, settings).items():
            if len(customers):
                results.append(ev.evaluate_method(name, segment, scorer, customers, split, products))
    return results


def format_report(results: list[ev.MethodResult], production: Production | None = None) -> str:
    lines = [f"{'method':<20} {'customers':>9}  {'NDCG@10 [95% CI]':<26} {'recall@10 [95% CI]':<26} coverage"]
    for segment in (ev.KNOWN, ev.NEW):
        rows = [r for r in results if r.segment == segment]
        if rows:
            lines.append(f"{segment} customers")
        for r in rows:
            lines.append(
                f"  {r.method:<18} {r.customers:>9,}  {r.ndcg.mean:.4f} [{r.ndcg.low:.4f}, {r.ndcg.high:.4f}]"
                f"   {r.recall.mean:.4f} [{r.recall.low:.4f}, {r.recall.high:.4f}]   {r.coverage:.3f}"
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


def _gate(results, production: Production | None, settings: RecommenderSettings) -> GateDecision:
    known = {r.method: r.ndcg.mean for r in results if r.segment == ev.KNOWN}
    prod_ndcg, basis = None, None
    if production is not None:
        if PRODUCTION in known:
            prod_ndcg, basis = known[PRODUCTION], f"version {production.version} on this test period"
        elif production.recorded and ev.KNOWN in production.recorded:
            prod_ndcg = production.recorded[ev.KNOWN]
            basis = f"version {production.version} as recorded at its own evaluation"
    return decide(
        known,
        margin=settings.gate_margin,
        baseline=settings.gate_baseline,
        tolerance=settings.gate_tolerance,
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
        },
        "production": production.version if production else None,
        "results": [r.to_dict() for r in results],
        "summary": _summary(results),
        "report": report,
    }


def train_version(
    settings: RecommenderSettings,
    *,
    build_id: str | None = None,
    conninfo: str | None = None,
    data: TrainingData | None = None,
) -> TrainingOutcome:
    """Evaluate, gate and register one version trained on a build (the newest by default)."""
    timings, started = {}, time.perf_counter()
    data = data or training_data(read_export(settings.platform, build_id))
    timings["read_s"] = time.perf_counter() - started
    params = params_from(settings)
    split = ev.time_split(data, settings.test_fraction)
    registry = Registry.from_settings(settings.platform)
    production = production_reference(registry, conninfo, split.cutoff)
    candidate = fit(data, split.train, params)
    timings["train_split_s"] = candidate.train_seconds
    timings["train_split_cpu_s"] = candidate.train_cpu_seconds
    mark, cpu = time.perf_counter(), time.process_time()
    results = evaluate(data, split, candidate, production, settings)
    timings["evaluate_s"], timings["evaluate_cpu_s"] = time.perf_counter() - mark, time.process_time() - cpu
    gate = _gate(results, production, settings)
    report = format_report(results, production)
    log.info(
        "evaluation of build %s (split at %s):\n%s\ngate: %s",
        data.build_id,
        split.cutoff,
        report,
        gate.summary(),
    )
    final = fit(data, data.interactions, params)
    timings["train_final_s"] = final.train_seconds
    timings["train_final_cpu_s"] = final.train_cpu_seconds
    version = new_version_id()
    mark = time.perf_counter()
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "status": "approved" if gate.approved else "refused",
        "training_build": data.build_id,
        "data_through": str(data.interactions["first_ordered_at"].max()),
        "code": code_version(),
        "params": params.to_dict(),
        "encoder": final.spec,
        "evaluation": _evaluation_doc(split, settings, production, results, report),
        "gate": gate.to_dict(),
        "timings": timings,
    }
    path = registry.write(version, final, manifest)
    timings["write_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    return TrainingOutcome(version, data.build_id, gate.approved, gate, report, path, timings)
