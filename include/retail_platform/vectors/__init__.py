"""The vector store: published recommender versions in PostgreSQL + pgvector, the store of record
the serving side loads from (and the popular-products list the fallback serves)."""
