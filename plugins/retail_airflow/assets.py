"""The Assets that chain the DAGs (data-aware scheduling)."""

from airflow.sdk import Asset, AssetAny

from retail_platform.sources import SourceNames


def raw_lake_asset(names: SourceNames) -> Asset:
    """A source's committed batches in the lake: its extraction DAG -> transform_warehouse."""
    return Asset(name=names.asset_name, uri=names.asset_uri)


def any_raw_lake_asset(sources: list[SourceNames]) -> AssetAny:
    """New batches of any source: the warehouse rebuilds from every source's committed batches."""
    return AssetAny(*(raw_lake_asset(names) for names in sources))


# The dashboard marts (marts/analytics) after a successful build.
ANALYTICS_MARTS = Asset(name="warehouse_analytics_marts", uri="retail://warehouse/marts/analytics")
# Each build of the training table exported to the lake: transform_warehouse -> retraining.
TRAINING_EXPORT = Asset(name="lake_ml_ratings_ml_training", uri="retail://lake/ml/ratings_ml_training")
# A recommender version (and the popular list with it) switched to in the vector database:
# retrain_recommender -> the serving side reloads.
VECTOR_RECOMMENDER = Asset(name="vector_recommender", uri="retail://vector/recommender")
