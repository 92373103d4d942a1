-- Prices are positive and products sell above cost: buy price below MSRP, unit prices paid above zero.
select
    'product' as kind,
    product_code as id
from {{ ref('dim_products') }}
where buy_price <= 0 or msrp <= 0 or buy_price > msrp

union all

select
    'order line' as kind,
    order_line_id as id
from {{ ref('fct_order_lines') }}
where price_each <= 0 or quantity_ordered <= 0
