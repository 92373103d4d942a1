with source as (
    select * from {{ source('classicmodels', 'orderdetails') }}
),

latest as (
    {{ latest_per_key('source', ['orderNumber', 'productCode'], version_column='updated_at') }}
),

renamed as (
    select
        cast(orderNumber as integer) as order_number,
        productCode as product_code,
        cast(quantityOrdered as integer) as quantity_ordered,
        cast(priceEach as decimal(10, 2)) as price_each,
        cast(orderLineNumber as integer) as order_line_number,
        cast(updated_at as timestamp) as updated_at,
        cast(_extracted_at as timestamp) as extracted_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
