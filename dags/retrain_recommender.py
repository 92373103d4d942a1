"""
### retrain_recommender

Turns a training export into a recommender version, shows whether it beats what serves today, and
publishes its embeddings to the vector database (PostgreSQL + pgvector) when it does.

* **Schedule:** on the `retail://lake/ml/ratings_ml_training` Asset (each export of the
  warehouse). Training starts only when the newest version is older than
  `RETAIL_RECOMMENDER_MIN_INTERVAL_H` (weekly by default); every run publishes the build's popular
  list, the fallback the serving side shows when it cannot personalise.
* **Manual runs (Params):** `build_id` trains on that export build (default: the newest);
  `publish_version` publishes that version from the registry instead, without training (also a
  way forward after a rollback). A manual run ignores the minimum interval.
* **Tasks:** `plan` decides; `publish_popular_list`; `train_and_evaluate` (LightFM hybrid, WARP,
  evaluated on a time split beside popularity, popularity by country, production and, on
  generated data, the ceiling; the version goes to `lake/ml/models/recommender/version=<v>/`,
  refused or not); `publish_model` (only an approved version: one transaction switches the
  pointer and the views; emits `retail://vector/recommender` for the serving side); `prune_versions`
  (past `RETAIL_RECOMMENDER_RETENTION_DAYS`, never the current or previous version).
* **Gate:** NDCG@10 for known customers must beat the popular list by
  `RETAIL_RECOMMENDER_GATE_MARGIN` and stay within `RETAIL_RECOMMENDER_GATE_TOLERANCE` of the
  production model; a refusal is explained in the log and sent to the data scientist's channel
  (`RETAIL_RECOMMENDER_ALERT_CHANNEL`), and the model serving now stays.
* **Rollback:** `retail recommender rollback [--to VERSION]` (seconds, no retraining).
* **Owner:** data-science. **Connection:** `retail_vectors` (`AIRFLOW_CONN_RETAIL_VECTORS`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, task
from retail_airflow.assets import TRAINING_EXPORT, VECTOR_RECOMMENDER
from retail_airflow.dag_defaults import platform_default_args


@dag(
    dag_id="retrain_recommender",
    schedule=[TRAINING_EXPORT],
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=platform_default_args("data-science", retries=1, execution_timeout=timedelta(minutes=60)),
    params={
        "build_id": Param(
            None, type=["null", "string"], description="train on this export build (default: newest)"
        ),
        "publish_version": Param(
            None, type=["null", "string"], description="publish this registered version instead of training"
        ),
    },
    tags=["recommender", "ml", "vectors"],
    doc_md=__doc__,
)
def retrain_recommender():
    @task
    def plan(params=None, dag_run=None) -> dict:
        from retail_platform.recommender.publishing import plan_run
        from retail_platform.recommender.settings import RecommenderSettings

        manual = str(getattr(dag_run, "run_type", "")) not in (
            "asset_triggered",
            "DagRunType.ASSET_TRIGGERED",
        )
        return plan_run(
            RecommenderSettings.from_env(),
            build_id=params.get("build_id"),
            version=params.get("publish_version"),
            manual=manual,
        ).to_dict()

    @task
    def publish_popular_list(run_plan: dict) -> dict:
        from retail_platform.recommender.publishing import publish_popular, vectors_conninfo
        from retail_platform.recommender.settings import RecommenderSettings

        return publish_popular(RecommenderSettings.from_env(), vectors_conninfo(), run_plan["build_id"])

    @task
    def train_and_evaluate(run_plan: dict) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from retail_platform.recommender.publishing import TRAIN, vectors_conninfo
        from retail_platform.recommender.settings import RecommenderSettings
        from retail_platform.recommender.training import train_version

        if run_plan["action"] != TRAIN:
            raise AirflowSkipException(run_plan["reason"])
        settings = RecommenderSettings.from_env()
        return train_version(settings, build_id=run_plan["build_id"], conninfo=vectors_conninfo()).to_dict()

    @task(outlets=[VECTOR_RECOMMENDER], trigger_rule="none_failed")
    def publish_model(run_plan: dict, outcome: dict | None, *, outlet_events=None, ti=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from retail_platform.recommender.publishing import publish_decided, vectors_conninfo
        from retail_platform.recommender.settings import RecommenderSettings

        summary = publish_decided(
            RecommenderSettings.from_env(),
            vectors_conninfo(),
            run_plan,
            outcome,
            run_url=getattr(ti, "log_url", None),
        )
        if not summary["published"]:
            raise AirflowSkipException(summary["reason"])  # no Asset event: nothing changed
        outlet_events[VECTOR_RECOMMENDER].extra = summary
        return summary

    @task(trigger_rule="none_failed")
    def prune_versions() -> dict:
        from retail_platform.recommender.publishing import prune, vectors_conninfo
        from retail_platform.recommender.settings import RecommenderSettings

        return prune(RecommenderSettings.from_env(), vectors_conninfo())

    run_plan = plan()
    popular = publish_popular_list(run_plan)
    outcome = train_and_evaluate(run_plan)
    popular >> outcome
    publish_model(run_plan, outcome) >> prune_versions()


retrain_recommender()
