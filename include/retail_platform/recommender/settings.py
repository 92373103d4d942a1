"""Settings of the recommender: training, evaluation, the gate, the registry and the vector database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from retail_platform.settings import Settings, choice_setting, float_setting, int_setting

SETTINGS_DOC: list[tuple[str, str, str]] = [
    (
        "AIRFLOW_CONN_RETAIL_VECTORS",
        "required (./platform: the sandbox's PostgreSQL)",
        "the vector database (postgresql://user:pass@host:port/db with pgvector), from the environment or "
        "any Airflow connection backend; the retraining DAG publishes there, the serving side reads it",
    ),
    (
        "RETAIL_RECOMMENDER_MIN_INTERVAL_H",
        "168",
        "a training export starts a retraining only when the newest model is older than this many hours "
        "(weekly); the popular list is published on every export; manual runs ignore it",
    ),
    (
        "RETAIL_RECOMMENDER_MODEL",
        "auto",
        "what is trained and served: lightfm (LightFM hybrid, WARP), favourite_line (the customer's "
        "product-line shares then popularity, new customers popularity in their country, as vectors; no "
        "training), or auto: LightFM, and the heuristic when the gate refuses LightFM (at the prod preset "
        "LightFM wins; on the classic preset's 122 customers the heuristic does)",
    ),
    ("RETAIL_RECOMMENDER_EPOCHS", "3", "LightFM training epochs (NDCG@10 peaked at 3 of 1, 3, 5 and 8)"),
    ("RETAIL_RECOMMENDER_LEARNING_RATE", "0.05", "LightFM learning rate (adagrad)"),
    ("RETAIL_RECOMMENDER_SEED", "42", "random seed: the same build, seed and settings give the same model"),
    (
        "RETAIL_RECOMMENDER_THREADS",
        "1",
        "LightFM training threads; above 1 training is faster but no longer deterministic (Hogwild)",
    ),
    (
        "RETAIL_RECOMMENDER_TEST_FRACTION",
        "0.1",
        "the time-based split: the newest fraction of first purchases is the evaluation's test period",
    ),
    (
        "RETAIL_RECOMMENDER_GATE_BASELINE",
        "best",
        "what the gate compares with: best (the margin over the best of the popular list as served, "
        "popularity and popularity by country; a paired difference above zero against the best of those, "
        "the favourite line, line x scale and item-item co-occurrence, leaving out the model's own recipe; "
        "new customers not measurably worse) or popular_7d (every rule against the popular list as served)",
    ),
    (
        "RETAIL_RECOMMENDER_GATE_MARGIN",
        "0.10",
        "the gate: NDCG@10 for known customers must beat the best popularity baseline by this fraction",
    ),
    (
        "RETAIL_RECOMMENDER_GATE_TOLERANCE",
        "0.05",
        "the gate: NDCG@10 for known customers may fall at most this fraction below the production model's",
    ),
    (
        "RETAIL_RECOMMENDER_RETENTION_DAYS",
        "90",
        "versions older than this are pruned from the lake registry and the vector database "
        "(never the current or the previous one)",
    ),
    (
        "RETAIL_RECOMMENDER_ALERT_CHANNEL",
        "#data-science",
        "the data scientist's channel: gate refusals and retraining failures",
    ),
    (
        "RETAIL_GROUND_TRUTH_DIR",
        "<state>/ground_truth/classicmodels",
        "the generator's ground truth: when it holds purchase_model.json the evaluation adds the ceiling "
        "(the generator's own purchase probabilities)",
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
        return cls(
            platform=platform,
            min_interval_h=float_setting(env, "RETAIL_RECOMMENDER_MIN_INTERVAL_H", 168.0),
            model=choice_setting(env, "RETAIL_RECOMMENDER_MODEL", ("auto", "lightfm", "favourite_line")),
            epochs=int_setting(env, "RETAIL_RECOMMENDER_EPOCHS", 3),
            learning_rate=float_setting(env, "RETAIL_RECOMMENDER_LEARNING_RATE", 0.05),
            seed=int_setting(env, "RETAIL_RECOMMENDER_SEED", 42),
            threads=int_setting(env, "RETAIL_RECOMMENDER_THREADS", 1),
            test_fraction=float_setting(env, "RETAIL_RECOMMENDER_TEST_FRACTION", 0.1),
            gate_baseline=choice_setting(env, "RETAIL_RECOMMENDER_GATE_BASELINE", ("best", "popular_7d")),
            gate_margin=float_setting(env, "RETAIL_RECOMMENDER_GATE_MARGIN", 0.10),
            gate_tolerance=float_setting(env, "RETAIL_RECOMMENDER_GATE_TOLERANCE", 0.05),
            retention_days=float_setting(env, "RETAIL_RECOMMENDER_RETENTION_DAYS", 90.0),
            alert_channel=env.get("RETAIL_RECOMMENDER_ALERT_CHANNEL") or "#data-science",
            ground_truth_dir=Path(
                env.get("RETAIL_GROUND_TRUTH_DIR") or platform.ground_truth_dir / "classicmodels"
            ),
        )
