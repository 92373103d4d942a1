"""The recommender: trains a hybrid LightFM model on each training export, evaluates it against
popularity on a time-based split, gates it, keeps every version in the lake registry and publishes
the embeddings to PostgreSQL + pgvector (see README, "The recommender")."""
