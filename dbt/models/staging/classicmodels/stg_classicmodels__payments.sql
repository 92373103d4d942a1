with source as (
    select * from {{ source('classicmodels', 'payments') }}
),

latest as (
    {{ latest_per_key('source', ['customerNumber', 'checkNumber'], version_column='updated_at') }}
),

renamed as (
    select
        cast(customerNumber as integer) as customer_number,
        checkNumber as check_number,
        cast(paymentDate as date) as payment_date,
        cast(amount as decimal(10, 2)) as amount,
        cast(updated_at as timestamp) as updated_at,
        cast(_extracted_at as timestamp) as extracted_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
