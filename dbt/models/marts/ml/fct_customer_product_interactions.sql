-- Each customer x product interaction and when it happened: what the recommender learns from
-- (what a customer buys next) and splits by time for its evaluation. Cancelled orders are not
-- purchases. The rating, where the customer gave one, rides along.
with lines as (
    select * from {{ ref('fct_order_lines') }}
    where status <> 'Cancelled'
),

ratings as (
    select * from {{ ref('stg_classicmodels__ratings') }}
),

interactions as (
    select
        customer_number,
        product_code,
        min(ordered_at) as first_ordered_at,
        max(ordered_at) as last_ordered_at,
        count(distinct order_number) as orders,
        sum(quantity_ordered) as units,
        min(case when has_order_time then 1 else 0 end) = 1 as has_order_time
    from lines
    group by customer_number, product_code
)

select
    cast(interactions.customer_number as integer) as customer_number,
    cast(interactions.product_code as {{ dbt.type_string() }}) as product_code,
    cast(interactions.first_ordered_at as timestamp) as first_ordered_at,
    cast(interactions.last_ordered_at as timestamp) as last_ordered_at,
    cast(interactions.orders as integer) as orders,
    cast(interactions.units as integer) as units,
    cast(ratings.product_rating as integer) as product_rating,
    cast(interactions.has_order_time as boolean) as has_order_time
from interactions
left join ratings
    on
        interactions.customer_number = ratings.customer_number
        and interactions.product_code = ratings.product_code
