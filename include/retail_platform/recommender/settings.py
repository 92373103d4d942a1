"""Settings of the recommender: training, evaluation, the gate, the registry and the vector database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from retail_platform.settings import Setting, Settings, read_settings

SETTINGS_DOC: list[Setting] = [
    Setting(
        "AIRFLOW_CONN_RETAIL_VECTORS",
        None,
        "the vector database (postgresql://user:pass@host:port/db with pgvector), from the "
        "environment or any Airflow connection backend; the retraining DAG publishes there, the "
        "serving side reads it",
        shown="required (./platform: the sandbox's PostgreSQL)",
    ),
    Setting(
        "RETAIL_RECOMMENDER_MIN_INTERVAL_H",
        168.0,
        "a training export starts a retraining only when the newest model is older than this many "
        "hours (weekly); the popular list is published on every export; manual runs ignore it",
        float,
        "min_interval_h",
    ),
    Setting(
        "RETAIL_RECOMMENDER_MODEL",
        "auto",
        "what is trained and served: taste (each customer's line and scale preferences, smoothed "
        "towards their country's, then each product's share of its line x scale group, as vectors; "
        "no training), lightfm (LightFM hybrid, WARP), favourite_line (the customer's product-line "
        "shares then popularity), or auto: taste, then LightFM when the gate refuses it, then the "
        "favourite line (taste wins at the prod and the classic preset)",
        attr="model",
        choices=("auto", "taste", "lightfm", "favourite_line"),
    ),
    Setting(
        "RETAIL_RECOMMENDER_EPOCHS",
        3,
        "LightFM training epochs (NDCG@10 peaked at 3 of 1, 3, 5 and 8)",
        int,
        "epochs",
    ),
    Setting(
        "RETAIL_RECOMMENDER_LEARNING_RATE",
        0.05,
        "LightFM learning rate (adagrad)",
        float,
        "learning_rate",
    ),
    Setting(
        "RETAIL_RECOMMENDER_SEED",
        42,
        "random seed: the same build, seed and settings give the same model",
        int,
        "seed",
    ),
    Setting(
        "RETAIL_RECOMMENDER_THREADS",
        1,
        "LightFM training threads; above 1 training is faster but no longer deterministic (Hogwild)",
        int,
        "threads",
    ),
    Setting(
        "RETAIL_RECOMMENDER_TEST_FRACTION",
        0.1,
        "the time-based split: the newest fraction of first purchases is the evaluation's test period",
        float,
        "test_fraction",
    ),
    Setting(
        "RETAIL_RECOMMENDER_GATE_BASELINE",
        "best",
        "what the gate compares with: best (the margin over the best of the popular list as served, "
        "popularity and popularity by country; a paired difference above zero against the best of "
        "those, the favourite line, line x scale and item-item co-occurrence, leaving out the model's "
        "own recipe, or, when too few customers can resolve the margin, ahead by point estimate: "
        "approved provisionally; new customers not measurably worse) or popular_7d (every rule "
        "against the popular list as served)",
        attr="gate_baseline",
        choices=("best", "popular_7d"),
    ),
    Setting(
        "RETAIL_RECOMMENDER_GATE_MARGIN",
        0.1,
        "the gate: NDCG@10 for known customers must beat the best popularity baseline by this fraction",
        float,
        "gate_margin",
    ),
    Setting(
        "RETAIL_RECOMMENDER_GATE_TOLERANCE",
        0.05,
        "the gate: NDCG@10 for known customers may fall at most this fraction below the production model's",
        float,
        "gate_tolerance",
    ),
    Setting(
        "RETAIL_RECOMMENDER_RETENTION_DAYS",
        90.0,
        "versions older than this are pruned from the lake registry and the vector database (never "
        "the current or the previous one)",
        float,
        "retention_days",
    ),
    Setting(
        "RETAIL_RECOMMENDER_ALERT_CHANNEL",
        "#data-science",
        "the data scientist's channel: gate refusals and retraining failures",
        attr="alert_channel",
    ),
    Setting(
        "RETAIL_GROUND_TRUTH_DIR",
        None,
        "the generator's ground truth: when it holds purchase_model.json the evaluation adds the "
        "ceiling (the generator's own purchase probabilities)",
        Path,
        "ground_truth_dir",
        shown="<state>/ground_truth/classicmodels",
    ),
]


@dataclass(frozen=True)
class RecommenderSettings:
    platform: Settings
    min_interval_h: float
    model: str
    epochs: int
    learning_rate: float
    seed: int
    threads: int
    test_fraction: float
    gate_baseline: str
    gate_margin: float
    gate_tolerance: float
    retention_days: float
    alert_channel: str
    ground_truth_dir: Path

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> RecommenderSettings:
        env = os.environ if environ is None else environ
        platform = Settings.from_env(environ)
        values = read_settings(SETTINGS_DOC, env)
        ground_truth = values.pop("ground_truth_dir") or platform.ground_truth_dir / "classicmodels"
        return cls(platform=platform, ground_truth_dir=ground_truth, **values)
