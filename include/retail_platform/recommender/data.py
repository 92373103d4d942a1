"""The recommender's input: one export build of the warehouse, read and validated.

A build (``lake/ml/ratings_ml_training/build_id=<id>/``) holds the training table (the customers'
and products' features, one row per rated pair), the interactions (each customer x product
purchase with its first and last time) and the popular list. Anything a model must not learn from
fails here with an error naming the build, the table and the column: a missing column, no rows,
NaN in a feature, a missing key.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from retail_platform.vectors.encoder import ProductFeatures
from retail_platform.vectors.model import PopularList, PopularProduct, UserFeatures
from retail_platform.warehouse.export import INTERACTIONS, POPULAR, ExportBuild

CUSTOMER_COLUMNS = ["customerNumber", "city", "state", "country", "creditLimit"]
PRODUCT_COLUMNS = ["productCode", "productLine", "productScale", "buyPrice", "MSRP", "quantityInStock"]
OPTIONAL_PRODUCT_COLUMNS = ["productVendor"]
INTERACTION_COLUMNS = ["customer_number", "product_code", "first_ordered_at", "units"]
OPTIONAL_INTERACTION_COLUMNS = ["product_rating", "last_ordered_at", "orders"]
NUMERIC = {"creditLimit", "buyPrice", "MSRP", "quantityInStock", "units"}
REQUIRED_VALUES = {"customerNumber", "productCode", "customer_number", "product_code", "first_ordered_at"}


class InvalidTrainingBuild(ValueError):
    """A training build no model may be trained on; the message names the build and the column."""


@dataclass(frozen=True)
class TrainingData:
    build_id: str
    customers: pd.DataFrame  # one row per customer: CUSTOMER_COLUMNS
    products: pd.DataFrame  # one row per product (the catalogue): PRODUCT_COLUMNS (+ productVendor)
    # customer_number, product_code, first_ordered_at, last_ordered_at, units (, orders, product_rating)
    interactions: pd.DataFrame
    popular: PopularList | None
    # Products of the catalogue (dim_products) the training table lacks (never ordered): publishing
    # gives each a vector from its features, so the evaluation ranks them too.
    unseen: tuple[ProductFeatures, ...] = ()

    def user_features(self, customer_number: int) -> UserFeatures:
        row = self.customers.loc[customer_number]
        return user_features_of(customer_number, row)


def user_features_of(customer_number: int, row) -> UserFeatures:
    credit = row["creditLimit"]
    return UserFeatures(
        customer_number=int(customer_number),
        city=row["city"],
        state=row["state"] if isinstance(row["state"], str) else None,
        country=row["country"],
        credit_limit=None if pd.isna(credit) else float(credit),
    )


def product_features_of(code: str, row) -> ProductFeatures:
    def number(name):
        value = row[name]
        return None if pd.isna(value) else float(value)

    vendor = row.get("productVendor")
    return ProductFeatures(
        product_code=code,
        product_line=row["productLine"],
        product_scale=row["productScale"],
        buy_price=number("buyPrice"),
        msrp=number("MSRP"),
        quantity_in_stock=number("quantityInStock"),
        product_vendor=vendor if isinstance(vendor, str) else None,
    )


def _check(build_id: str, name: str, table: pa.Table | None, columns: list[str]) -> pd.DataFrame:
    if table is None:
        raise InvalidTrainingBuild(
            f"training build {build_id} has no {name} table (exported before it existed): export a new build"
        )
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InvalidTrainingBuild(
            f"training build {build_id}: {name} lacks the column(s) {', '.join(missing)}"
        )
    if table.num_rows == 0:
        raise InvalidTrainingBuild(f"training build {build_id}: {name} is empty")
    optional = OPTIONAL_PRODUCT_COLUMNS + OPTIONAL_INTERACTION_COLUMNS
    table = table.select([c for c in table.column_names if c in columns or c in optional])
    for column in table.column_names:
        values = table.column(column)
        if column in REQUIRED_VALUES and values.null_count:
            raise InvalidTrainingBuild(
                f"training build {build_id}: {name}.{column} is null in {values.null_count} rows"
            )
        if column in NUMERIC:
            try:  # decimals, integers and floats alike, in bulk (never Python objects per row)
                values = pc.cast(values, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise InvalidTrainingBuild(
                    f"training build {build_id}: {name}.{column} is not numeric ({values.type})"
                ) from None
            bad = (pc.sum(pc.is_nan(values)).as_py() or 0) + (pc.sum(pc.is_inf(values)).as_py() or 0)
            if bad:  # a null is "unknown" (a bucket of its own); NaN is a broken feature
                raise InvalidTrainingBuild(
                    f"training build {build_id}: {name}.{column} holds NaN or infinite values"
                )
            table = table.set_column(table.column_names.index(column), column, values)
    return table.to_pandas()


def training_data(build: ExportBuild) -> TrainingData:
    """Validate a build and shape it for training."""
    training = _check(
        build.build_id,
        "ratings_ml_training",
        build.training,
        CUSTOMER_COLUMNS + PRODUCT_COLUMNS + ["productRating"],
    )
    interactions = _check(build.build_id, INTERACTIONS, build.interactions, INTERACTION_COLUMNS)
    customers = training[CUSTOMER_COLUMNS].drop_duplicates("customerNumber").set_index("customerNumber")
    product_columns = PRODUCT_COLUMNS + [c for c in OPTIONAL_PRODUCT_COLUMNS if c in training.columns]
    products = training[product_columns].drop_duplicates("productCode").set_index("productCode").sort_index()
    interactions["first_ordered_at"] = pd.to_datetime(interactions["first_ordered_at"])
    # The last purchase tells a repeat purchase in the test period (builds before it: first only).
    if "last_ordered_at" in interactions:
        last = pd.to_datetime(interactions["last_ordered_at"])
        interactions["last_ordered_at"] = last.fillna(interactions["first_ordered_at"])
    else:
        interactions["last_ordered_at"] = interactions["first_ordered_at"]
    unknown = ~interactions["product_code"].isin(products.index)
    if unknown.all():
        raise InvalidTrainingBuild(
            f"training build {build.build_id}: no product of {INTERACTIONS} is in ratings_ml_training"
        )
    return TrainingData(
        build_id=build.build_id,
        customers=customers,
        products=products,
        interactions=interactions[~unknown].reset_index(drop=True),
        popular=popular_list(build),
        unseen=unseen_products(build, products.index),
    )


def unseen_products(build: ExportBuild, trained: pd.Index) -> tuple[ProductFeatures, ...]:
    """The catalogue's products outside the training table (none for a build without a catalogue)."""
    from retail_platform.vectors.catalogue import catalogue_features

    table = getattr(build, "catalogue", None)
    if table is None:
        return ()
    return tuple(f for f in catalogue_features(table) if f.product_code not in trained)


def popular_list(build: ExportBuild) -> PopularList | None:
    """The build's fallback list (``fct_popular_products_7d``), ranked; None if the build has none."""
    table = build.popular
    if table is None or table.num_rows == 0:
        return None
    missing = [c for c in ("popularity_rank", "product_code", "units") if c not in table.column_names]
    if missing:
        raise InvalidTrainingBuild(f"training build {build.build_id}: {POPULAR} lacks {', '.join(missing)}")
    frame = table.to_pandas().sort_values("popularity_rank")
    return PopularList(
        build.build_id,
        tuple(
            PopularProduct(int(r.popularity_rank), str(r.product_code), float(r.units))
            for r in frame.itertuples(index=False)
        ),
    )
