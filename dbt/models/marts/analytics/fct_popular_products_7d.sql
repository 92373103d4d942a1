-- The most popular products of the last days before the newest order in the data: what the
-- recommender serves when it cannot personalise (the fallback list), and a dashboard tile.
{%- set days = var('popular_products_days') %}

with lines as (
    select * from {{ ref('fct_order_lines') }}
    where status <> 'Cancelled'
),

bounds as (
    select
        {{ dbt.dateadd('day', -days, 'max(ordered_at)') }} as window_start,
        max(ordered_at) as window_end
    from lines
),

recent as (
    select
        lines.product_code,
        sum(lines.quantity_ordered) as units,
        sum(lines.line_revenue) as revenue,
        count(distinct lines.order_number) as orders,
        count(distinct lines.customer_number) as customers
    from lines
    cross join bounds
    where lines.ordered_at > bounds.window_start and lines.ordered_at <= bounds.window_end
    group by lines.product_code
),

ranked as (
    select
        *,
        row_number() over (order by units desc, revenue desc, product_code) as popularity_rank
    from recent
)

select
    cast(ranked.popularity_rank as integer) as popularity_rank,
    cast(ranked.product_code as {{ dbt.type_string() }}) as product_code,
    cast(products.product_name as {{ dbt.type_string() }}) as product_name,
    cast(products.product_line as {{ dbt.type_string() }}) as product_line,
    cast(ranked.units as bigint) as units,
    cast(ranked.revenue as decimal(18, 2)) as revenue,
    cast(ranked.orders as bigint) as orders,
    cast(ranked.customers as bigint) as customers,
    cast(bounds.window_start as timestamp) as window_start,
    cast(bounds.window_end as timestamp) as window_end
from ranked
cross join bounds
inner join {{ ref('dim_products') }} as products on ranked.product_code = products.product_code
where ranked.popularity_rank <= {{ var('popular_products_top_n') }}
