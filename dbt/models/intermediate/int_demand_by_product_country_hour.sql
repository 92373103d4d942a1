-- Demand of each product in each country each hour it sold (sparse: hours without sales are absent).
with lines as (
    select * from {{ ref('int_order_lines_joined_to_orders') }}
    where status <> 'Cancelled'
),

customers as (
    select * from {{ ref('stg_classicmodels__customers') }}
)

select
    lines.order_hour,
    lines.product_code,
    customers.country,
    lines.has_order_time,
    count(distinct lines.order_number) as orders,
    sum(lines.quantity_ordered) as units,
    sum(lines.line_revenue) as revenue,
    max(lines.ordered_at) as last_ordered_at
from lines
inner join customers on lines.customer_number = customers.customer_number
group by lines.order_hour, lines.product_code, customers.country, lines.has_order_time
