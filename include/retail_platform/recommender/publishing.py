"""Publishing registered versions to the vector database, rolling back, pruning, announcing refusals.

The vector database is the connection ``retail_vectors`` (``AIRFLOW_CONN_RETAIL_VECTORS``); a
missing one is a configuration error naming it. See ``retail_platform.vectors.store`` for the
tables and the atomic switch.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from retail_platform.alerts import Alert, deliver
from retail_platform.recommender.data import popular_list
from retail_platform.recommender.registry import Registry
from retail_platform.recommender.settings import RecommenderSettings
from retail_platform.vectors import store
from retail_platform.vectors.model import PopularList
from retail_platform.warehouse.export import read_export

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """What a retraining run does: train on a build, publish a named version, or only the popular list."""

    action: str  # TRAIN, PUBLISH or POPULAR_ONLY
    build_id: str | None
    version: str | None
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


TRAIN, PUBLISH, POPULAR_ONLY = "train", "publish", "popular_only"


def vectors_conninfo() -> str:
    return store.conninfo_from_connection()


def plan_run(
    settings: RecommenderSettings,
    *,
    build_id: str | None = None,
    version: str | None = None,
    manual: bool = False,
    now: datetime | None = None,
) -> RunPlan:
    """Manual runs do what they ask; a run the training export started trains only when the newest
    version is older than the minimum interval."""
    if version:
        return RunPlan(PUBLISH, build_id, version, f"publish version {version} as asked")
    if manual:
        return RunPlan(TRAIN, build_id, None, "a manual run trains")
    versions = Registry.from_settings(settings.platform).versions()
    if versions:
        newest = datetime.fromisoformat(versions[-1]["created_at"])
        age = (now or datetime.now(UTC)) - newest
        if age < timedelta(hours=settings.min_interval_h):
            return RunPlan(
                POPULAR_ONLY,
                build_id,
                None,
                f"the newest version {versions[-1]['version']} is {age.total_seconds() / 3600:.1f} h old, "
                f"under the minimum interval of {settings.min_interval_h:g} h: "
                "only the popular list is published",
            )
    return RunPlan(TRAIN, build_id, None, "no version within the minimum interval")


def build_popular_list(settings: RecommenderSettings, build_id: str | None = None) -> PopularList | None:
    return popular_list(read_export(settings.platform, build_id))


def publish_popular(settings: RecommenderSettings, conninfo: str, build_id: str | None = None) -> dict:
    """Make the build's popular list the fallback (before any model exists, or when a model is refused)."""
    popular = build_popular_list(settings, build_id)
    if popular is None:
        return {"published": False, "reason": "the build has no popular list"}
    pointer = store.publish_popular(conninfo, popular)
    return {"published": True, "popular_build": pointer.popular_build, "products": len(popular.products)}


def publish_version(
    settings: RecommenderSettings,
    conninfo: str,
    version: str,
    *,
    popular: PopularList | None = None,
    build_id: str | None = None,
) -> store.CurrentPointer:
    """Load a registered version (if not loaded yet) and switch to it, with the popular list if given.
    Every product of the build's catalogue gets a vector (see ``catalogue_payload``)."""
    payload = catalogue_payload(Registry.from_settings(settings.platform), version, settings, build_id)
    return store.publish(conninfo, payload, popular)


def catalogue_payload(
    registry: Registry, version: str, settings: RecommenderSettings, build_id: str | None = None
) -> store.VersionPayload:
    """The registered version, plus a vector computed from its features with the version's item
    feature vectors for each product of the build's catalogue (``dim_products``) the model never saw,
    and every product's line. A build exported before the catalogue was: the version as trained."""
    import pyarrow.parquet as pq

    from retail_platform.vectors.catalogue import catalogue_features, feature_table, with_catalogue

    payload = registry.payload(version)
    catalogue = read_export(settings.platform, build_id).catalogue
    if catalogue is None:
        log.warning(
            "export build without a catalogue: version %s publishes its trained products only", version
        )
        return payload
    products = catalogue_features(catalogue)
    try:
        items = pq.read_table(
            f"{registry.folder(version)}/item_features.parquet", filesystem=registry.storage.fs
        )
    except FileNotFoundError:  # a recipe without item features: the lines still reach the fallback
        log.warning("version %s has no item features: products it never saw get no vector", version)
        return with_catalogue(
            payload, [p for p in products if p.product_code in payload.product_codes], (), ()
        )
    return with_catalogue(payload, products, *feature_table(items))


def rollback(settings: RecommenderSettings, conninfo: str, to: str | None = None) -> store.CurrentPointer:
    """Back to the previous version, or to ``to`` (reloaded from the registry if it was pruned here)."""
    if to is not None and not store.is_loaded(conninfo, to):
        store.load_version(conninfo, Registry.from_settings(settings.platform).payload(to))
    return store.rollback(conninfo, to)


def prune(settings: RecommenderSettings, conninfo: str, now: datetime | None = None) -> dict:
    """Drop versions past the retention window from the registry and the vector database; never the
    current or the previous one."""
    retention = timedelta(days=settings.retention_days)
    pointer = store.current_pointer(conninfo)
    keep = {v for v in (pointer.version, pointer.previous_version) if v} if pointer else set()
    return {
        "registry": Registry.from_settings(settings.platform).prune(retention, keep, now),
        "vector_db": store.prune(conninfo, retention, now) if pointer else [],
    }


def refusal_alert(outcome: dict, settings: RecommenderSettings, run_url: str | None = None) -> Alert:
    """``outcome``: a ``TrainingOutcome.to_dict()`` whose gate refused the version."""
    gate = outcome["gate"]
    title = f"Recommender version {outcome['version']} not published: the gate refused it"
    text = (
        f"*Training build:* `{outcome['build_id']}`\n*Why:* {'; '.join(gate['reasons'])}\n"
        f"The model now serving stays. The version is kept in the registry for analysis: {outcome['path']}\n"
        f"```{outcome['report']}```"
    )
    return Alert.message(
        "recommender_refused",
        title,
        text,
        link=run_url,
        channel=settings.alert_channel,
        details={"version": outcome["version"], "build_id": outcome["build_id"], "gate": gate},
    )


def provisional_alert(outcome: dict, settings: RecommenderSettings, run_url: str | None = None) -> Alert:
    """``outcome``: a ``TrainingOutcome.to_dict()`` the gate approved provisionally (a lead too few
    customers can make significant): published, and the data scientist told so."""
    gate = outcome["gate"]
    title = f"Recommender version {outcome['version']} published, {gate['provisional']}"
    text = (
        f"*Training build:* `{outcome['build_id']}`\n*Why provisional:* {'; '.join(gate['reasons'])}\n"
        "It is ahead of every baseline by point estimate and significantly behind none; the next "
        f"retraining decides again.\n```{outcome['report']}```"
    )
    return Alert.message(
        "recommender_provisional",
        title,
        text,
        link=run_url,
        channel=settings.alert_channel,
        details={"version": outcome["version"], "build_id": outcome["build_id"], "gate": gate},
    )


def publish_decided(
    settings: RecommenderSettings,
    conninfo: str,
    run_plan: dict,
    outcome: dict | None,
    *,
    run_url: str | None = None,
) -> dict:
    """Publish what the run decided: the version an operator named, or the version just trained
    if the gate approved it. A refusal is announced to the data scientist's channel."""
    if run_plan["action"] == PUBLISH:
        version, why = run_plan["version"], "as asked"
    elif run_plan["action"] == TRAIN and outcome is not None:
        if not outcome["approved"]:
            where = deliver(refusal_alert(outcome, settings, run_url), settings.platform)
            reason = f"the gate refused version {outcome['version']}: {'; '.join(outcome['gate']['reasons'])}"
            log.warning("%s (announced to %s via %s)", reason, settings.alert_channel, where)
            return {"published": False, "reason": reason, "version": outcome["version"]}
        version, why = outcome["version"], "approved by the gate"
        if outcome["gate"].get("provisional"):
            why += f" ({outcome['gate']['provisional']})"
    else:
        return {"published": False, "reason": run_plan["reason"]}
    popular = build_popular_list(settings, run_plan.get("build_id"))
    pointer = publish_version(settings, conninfo, version, popular=popular, build_id=run_plan.get("build_id"))
    log.info("published version %s (%s); previous %s", pointer.version, why, pointer.previous_version)
    if run_plan["action"] == TRAIN and outcome["gate"].get("provisional"):  # told once it serves
        deliver(provisional_alert(outcome, settings, run_url), settings.platform)
    return {
        "published": True,
        "version": pointer.version,
        "previous_version": pointer.previous_version,
        "popular_build": pointer.popular_build,
        "reason": why,
    }
