with source as (
    select * from {{ source('classicmodels', 'ratings') }}
),

latest as (
    {{ latest_per_key('source', ['customerNumber', 'productCode'], version_column='updated_at') }}
),

renamed as (
    select
        cast(customerNumber as integer) as customer_number,
        productCode as product_code,
        cast(productRating as integer) as product_rating,
        cast(updated_at as timestamp) as updated_at,
        cast(_extracted_at as timestamp) as extracted_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
