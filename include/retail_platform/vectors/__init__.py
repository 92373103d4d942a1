"""The vector store: published recommender versions in PostgreSQL + pgvector, the store of record
the serving side loads from (and the popular-products list the fallback serves)."""

# The Airflow connection of the vector database (AIRFLOW_CONN_RETAIL_VECTORS): a postgresql:// URI.
VECTORS_CONN_ID = "retail_vectors"
