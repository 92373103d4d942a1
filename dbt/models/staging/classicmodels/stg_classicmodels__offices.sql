with source as (
    select * from {{ source('classicmodels', 'offices') }}
),

latest as (
    {{ latest_per_key('source', ['officeCode']) }}
),

renamed as (
    select
        officeCode as office_code,
        city,
        phone,
        addressLine1 as address_line_1,
        addressLine2 as address_line_2,
        state,
        trim(country) as country,
        postalCode as postal_code,
        territory,
        cast(_extracted_at as timestamp) as extracted_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
