with products as (
    select * from {{ ref('stg_classicmodels__products') }}
)

select
    cast(product_code as {{ dbt.type_string() }}) as product_code,
    cast(product_name as {{ dbt.type_string() }}) as product_name,
    cast(product_line as {{ dbt.type_string() }}) as product_line,
    cast(product_scale as {{ dbt.type_string() }}) as product_scale,
    cast(product_vendor as {{ dbt.type_string() }}) as product_vendor,
    cast(quantity_in_stock as integer) as quantity_in_stock,
    cast(buy_price as decimal(10, 2)) as buy_price,
    cast(msrp as decimal(10, 2)) as msrp
from products
