"""The recommender's features and the encoder live with the vector store's interface, in
``retail_platform.vectors.encoder`` (the serving side reads them without this room); re-exported
here for the training code's readers."""

from retail_platform.vectors.encoder import (  # noqa: F401
    BIAS_COLUMN,
    COMPONENTS,
    IMPUTED_ID,
    MEAN,
    SUM,
    FeatureEncoder,
    ProductFeatures,
    bucket_of,
    customer_tokens,
    norm_text,
    product_tokens,
    quantile_edges,
)
