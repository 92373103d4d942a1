"""The recommender's input in seconds: the warehouse's ml marts over the generator's tables, computed
by DuckDB, written as an export build (imported by tests/test_recommender.py and
tests/test_serving_events.py). The dbt models themselves are built and exported by test_warehouse's
transform DAG test."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

TRAINING_SQL = """
select r.customerNumber::integer as customerNumber, c.city, c.state, c.postalCode, c.country,
       c.creditLimit::decimal(10, 2) as creditLimit, r.productCode, p.productLine, p.productScale,
       p.quantityInStock::integer as quantityInStock, p.buyPrice::decimal(10, 2) as buyPrice,
       p.MSRP::decimal(10, 2) as MSRP, r.productRating::integer as productRating
from ratings r join customers c using (customerNumber) join products p using (productCode)
"""
INTERACTIONS_SQL = """
select o.customerNumber::integer as customer_number, l.productCode as product_code,
       min(o.orderTimestamp) as first_ordered_at, max(o.orderTimestamp) as last_ordered_at,
       count(distinct o.orderNumber)::integer as orders, sum(l.quantityOrdered)::integer as units,
       any_value(r.productRating)::integer as product_rating, true as has_order_time
from orderdetails l join orders o using (orderNumber)
left join ratings r on r.customerNumber = o.customerNumber and r.productCode = l.productCode
where o.status <> 'Cancelled'
group by all
"""
POPULAR_SQL = """
with lines as (
    select l.productCode, l.quantityOrdered, o.orderTimestamp
    from orderdetails l join orders o using (orderNumber) where o.status <> 'Cancelled'
), recent as (
    select productCode, sum(quantityOrdered) as units from lines
    where orderTimestamp > (select max(orderTimestamp) - interval 7 day from lines) group by all
)
select (row_number() over (order by units desc, productCode))::integer as popularity_rank,
       productCode as product_code, units::bigint as units
from recent order by popularity_rank limit 50
"""
# dim_products, plus a product nobody ordered, as the published dump's S18_3233.
NEVER_ORDERED_IN_THE_DUMP = "S18_3233"
DIM_PRODUCTS_SQL = f"""
select productCode as product_code, productName as product_name, productLine as product_line,
       productScale as product_scale, productVendor as product_vendor,
       quantityInStock::integer as quantity_in_stock, buyPrice::decimal(10, 2) as buy_price,
       MSRP::decimal(10, 2) as msrp
from products
union all
select '{NEVER_ORDERED_IN_THE_DUMP}', '1985 Toyota Supra', 'Classic Cars', '1:18', 'Highway 66 Mini Classics',
       7733, 57.01, 107.57
"""


def export_generated(
    settings,
    preset: str = "classic",
    seed: int = 42,
    *,
    truth_dir: Path | None = None,
    catalogue: bool = False,
) -> tuple[str, pa.Table | None]:
    """The generator's ``preset`` as an export build in ``settings``' lake (with ``dim_products`` and
    the dump's never-ordered product when ``catalogue``; the ground truth in ``truth_dir`` if given).
    Returns the build id and the catalogue table."""
    import duckdb

    from retail_platform.sandbox.generator.build import generate
    from retail_platform.sandbox.generator.load import write_ground_truth
    from retail_platform.sandbox.generator.presets import get_preset
    from retail_platform.warehouse.export import CATALOGUE, INTERACTIONS, POPULAR, export_training_table

    source = generate(get_preset(preset), seed=seed)
    if truth_dir is not None:
        write_ground_truth(source, truth_dir)
    conn = duckdb.connect()
    for name, table in source.tables.items():
        conn.register(name, table)
    training, interactions, popular = (
        conn.sql(sql).to_arrow_table() for sql in (TRAINING_SQL, INTERACTIONS_SQL, POPULAR_SQL)
    )
    companions = {INTERACTIONS: interactions, POPULAR: popular}
    products = conn.sql(DIM_PRODUCTS_SQL).to_arrow_table() if catalogue else None
    if products is not None:
        companions[CATALOGUE] = products
    build_id = export_training_table(settings.platform, table=training, companions=companions)["build_id"]
    return build_id, products
