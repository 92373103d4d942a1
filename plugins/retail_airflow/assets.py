"""The Assets that chain the DAGs (data-aware scheduling)."""

from airflow.sdk import Asset

# Committed batches of the replica in the lake: extract_replica -> transform_warehouse.
RAW_CLASSICMODELS = Asset(name="lake_raw_classicmodels", uri="retail://lake/raw/classicmodels")
# The dashboard marts (marts/analytics) after a successful build.
ANALYTICS_MARTS = Asset(name="warehouse_analytics_marts", uri="retail://warehouse/marts/analytics")
# Each build of the training table exported to the lake: transform_warehouse -> retraining.
TRAINING_EXPORT = Asset(name="lake_ml_ratings_ml_training", uri="retail://lake/ml/ratings_ml_training")
