with source as (
    select * from {{ source('classicmodels', 'products') }}
),

latest as (
    {{ latest_per_key('source', ['productCode'], version_column='updated_at') }}
),

renamed as (
    select
        productCode as product_code,
        productName as product_name,
        productLine as product_line,
        productScale as product_scale,
        productVendor as product_vendor,
        productDescription as product_description,
        cast(quantityInStock as integer) as quantity_in_stock,
        cast(buyPrice as decimal(10, 2)) as buy_price,
        cast(MSRP as decimal(10, 2)) as msrp,
        cast(updated_at as timestamp) as updated_at,
        cast(_extracted_at as timestamp) as extracted_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
