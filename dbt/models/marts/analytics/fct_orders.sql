with orders as (
    select * from {{ ref('stg_classicmodels__orders') }}
),

lines as (
    select
        order_number,
        count(*) as line_count,
        sum(quantity_ordered) as units,
        sum(line_revenue) as order_total
    from {{ ref('fct_order_lines') }}
    group by order_number
)

select
    cast(orders.order_number as integer) as order_number,
    cast(orders.customer_number as integer) as customer_number,
    cast(coalesce(orders.order_timestamp, cast(orders.order_date as timestamp)) as timestamp) as ordered_at,
    cast(orders.order_date as date) as order_date,
    cast(orders.required_date as date) as required_date,
    cast(orders.shipped_date as date) as shipped_date,
    cast(orders.status as {{ dbt.type_string() }}) as status,
    cast(lines.line_count as integer) as line_count,
    cast(lines.units as bigint) as units,
    cast(lines.order_total as decimal(18, 2)) as order_total
from orders
inner join lines on orders.order_number = lines.order_number
