with lines as (
    select * from {{ ref('int_order_lines_joined_to_orders') }}
),

products as (
    select * from {{ ref('dim_products') }}
),

customers as (
    select * from {{ ref('dim_customers') }}
)

select
    cast(
        {{ dbt.concat(["cast(lines.order_number as " ~ dbt.type_string() ~ ")", "'-'", "lines.product_code"]) }}
        as {{ dbt.type_string() }}
    ) as order_line_id,
    cast(lines.order_number as integer) as order_number,
    cast(lines.order_line_number as integer) as order_line_number,
    cast(lines.product_code as {{ dbt.type_string() }}) as product_code,
    cast(products.product_line as {{ dbt.type_string() }}) as product_line,
    cast(lines.customer_number as integer) as customer_number,
    cast(customers.country as {{ dbt.type_string() }}) as country,
    cast(customers.region as {{ dbt.type_string() }}) as region,
    cast(lines.ordered_at as timestamp) as ordered_at,
    cast(lines.order_hour as timestamp) as order_hour,
    cast(lines.order_date as date) as order_date,
    cast(lines.has_order_time as boolean) as has_order_time,
    cast(lines.status as {{ dbt.type_string() }}) as status,
    cast(lines.quantity_ordered as integer) as quantity_ordered,
    cast(lines.price_each as decimal(10, 2)) as price_each,
    cast(lines.line_revenue as decimal(18, 2)) as line_revenue
from lines
inner join products on lines.product_code = products.product_code
inner join customers on lines.customer_number = customers.customer_number
