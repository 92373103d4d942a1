with source as (
    select * from {{ source('classicmodels', 'orders') }}
),

latest as (
    {{ latest_per_key('source', ['orderNumber'], version_column='updated_at') }}
),

renamed as (
    select
        cast(orderNumber as integer) as order_number,
        cast(orderDate as date) as order_date,
        cast(requiredDate as date) as required_date,
        cast(shippedDate as date) as shipped_date,
        status,
        comments,
        cast(customerNumber as integer) as customer_number,
        cast(orderTimestamp as timestamp) as order_timestamp,
        cast(updated_at as timestamp) as updated_at,
        cast(_extracted_at as timestamp) as extracted_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
