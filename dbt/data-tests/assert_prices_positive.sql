-- Prices are positive and products sell above cost: buy price strictly below MSRP, and every unit
-- price paid above zero and at most the product's MSRP.
select
    'product' as kind,
    product_code as id
from {{ ref('dim_products') }}
where buy_price <= 0 or msrp <= 0 or buy_price >= msrp

union all

select
    'order line' as kind,
    lines.order_line_id as id
from {{ ref('fct_order_lines') }} as lines
inner join {{ ref('dim_products') }} as products on lines.product_code = products.product_code
where lines.price_each <= 0 or lines.quantity_ordered <= 0 or lines.price_each > products.msrp
