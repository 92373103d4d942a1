-- Hourly demand by product and country, with the product's name and line and the region for
-- roll-ups.
-- One row per hour a product sold in a country; on the unmodified schema the grain is daily
-- (order_hour at midnight, has_order_time false).
with demand as (
    select * from {{ ref('int_demand_by_product_country_hour') }}
),

products as (
    select * from {{ ref('dim_products') }}
),

country_regions as (
    select * from {{ ref('int_country_regions') }}
)

select
    cast(demand.order_hour as timestamp) as order_hour,
    cast(demand.product_code as {{ dbt.type_string() }}) as product_code,
    cast(products.product_name as {{ dbt.type_string() }}) as product_name,
    cast(products.product_line as {{ dbt.type_string() }}) as product_line,
    cast(demand.country as {{ dbt.type_string() }}) as country,
    cast(country_regions.region as {{ dbt.type_string() }}) as region,
    cast(demand.has_order_time as boolean) as has_order_time,
    cast(demand.orders as bigint) as orders,
    cast(demand.units as bigint) as units,
    cast(demand.revenue as decimal(18, 2)) as revenue,
    cast(demand.last_ordered_at as timestamp) as last_ordered_at
from demand
inner join products on demand.product_code = products.product_code
left join country_regions on demand.country = country_regions.country
