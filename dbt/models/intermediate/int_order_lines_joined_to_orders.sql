-- Order lines with their order's time and status. Inner join: a line whose order has not
-- arrived yet (two cursors, one run) waits for the next build rather than landing half-known.
with lines as (
    select * from {{ ref('stg_classicmodels__orderdetails') }}
),

orders as (
    select * from {{ ref('stg_classicmodels__orders') }}
),

joined as (
    select
        lines.order_number,
        lines.product_code,
        orders.customer_number,
        -- The unmodified schema has only the order's date: demand falls back to a daily grain.
        coalesce(orders.order_timestamp, cast(orders.order_date as timestamp)) as ordered_at,
        orders.order_timestamp is not null as has_order_time,
        orders.order_date,
        orders.status,
        lines.quantity_ordered,
        lines.price_each,
        lines.quantity_ordered * lines.price_each as line_revenue,
        lines.order_line_number
    from lines
    inner join orders on lines.order_number = orders.order_number
)

select
    *,
    {{ dbt.date_trunc('hour', 'ordered_at') }} as order_hour
from joined
