-- An order's total is the sum of its lines (no fan-out or loss in the order marts).
with line_totals as (
    select
        order_number,
        sum(line_revenue) as lines_total
    from {{ ref('fct_order_lines') }}
    group by order_number
)

select
    orders.order_number,
    orders.order_total,
    line_totals.lines_total
from {{ ref('fct_orders') }} as orders
left join line_totals on orders.order_number = line_totals.order_number
where line_totals.lines_total is null or orders.order_total <> line_totals.lines_total
