-- The recommender's training table: one row per rated (customer, product), with the customer's
-- and the product's features. Column names are the fixed interface (DESIGN.md).
with ratings as (
    select * from {{ ref('stg_classicmodels__ratings') }}
),

customers as (
    select * from {{ ref('stg_classicmodels__customers') }}
),

products as (
    select * from {{ ref('stg_classicmodels__products') }}
)

select
    cast(ratings.customer_number as integer) as customerNumber,
    cast(customers.city as {{ dbt.type_string() }}) as city,
    cast(customers.state as {{ dbt.type_string() }}) as state,
    cast(customers.postal_code as {{ dbt.type_string() }}) as postalCode,
    cast(customers.country as {{ dbt.type_string() }}) as country,
    cast(customers.credit_limit as decimal(10, 2)) as creditLimit,
    cast(ratings.product_code as {{ dbt.type_string() }}) as productCode,
    cast(products.product_line as {{ dbt.type_string() }}) as productLine,
    cast(products.product_scale as {{ dbt.type_string() }}) as productScale,
    cast(products.quantity_in_stock as integer) as quantityInStock,
    cast(products.buy_price as decimal(10, 2)) as buyPrice,
    cast(products.msrp as decimal(10, 2)) as MSRP,
    cast(ratings.product_rating as integer) as productRating
from ratings
inner join customers on ratings.customer_number = customers.customer_number
inner join products on ratings.product_code = products.product_code
