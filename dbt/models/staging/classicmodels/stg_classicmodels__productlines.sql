with source as (
    select * from {{ source('classicmodels', 'productlines') }}
),

latest as (
    {{ latest_per_key('source', ['productLine']) }}
),

renamed as (
    select
        productLine as product_line,
        textDescription as text_description,
        htmlDescription as html_description,
        cast(_extracted_at as timestamp) as extracted_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
