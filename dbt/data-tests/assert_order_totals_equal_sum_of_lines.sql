-- An order's total equals the sum of its lines as staged from the source (no fan-out or loss
-- between staging and the order marts): every staged line counts, none twice. Lines whose order,
-- customer or product is not staged yet (written between two tables' reads) wait for the next run.
with staged_totals as (
    select
        lines.order_number,
        sum(lines.quantity_ordered * lines.price_each) as lines_total
    from {{ ref('stg_classicmodels__orderdetails') }} as lines
    inner join {{ ref('stg_classicmodels__orders') }} as orders
        on lines.order_number = orders.order_number
    inner join {{ ref('stg_classicmodels__customers') }} as customers
        on orders.customer_number = customers.customer_number
    inner join {{ ref('stg_classicmodels__products') }} as products
        on lines.product_code = products.product_code
    group by lines.order_number
)

select
    coalesce(orders.order_number, staged_totals.order_number) as order_number,
    orders.order_total,
    staged_totals.lines_total
from {{ ref('fct_orders') }} as orders
full outer join staged_totals on orders.order_number = staged_totals.order_number
where
    orders.order_number is null
    or staged_totals.order_number is null
    or orders.order_total <> staged_totals.lines_total
