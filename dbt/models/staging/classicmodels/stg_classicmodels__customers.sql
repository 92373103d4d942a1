with source as (
    select * from {{ source('classicmodels', 'customers') }}
),

latest as (
    {{ latest_per_key('source', ['customerNumber'], version_column='updated_at') }}
),

renamed as (
    select
        cast(customerNumber as integer) as customer_number,
        customerName as customer_name,
        contactLastName as contact_last_name,
        contactFirstName as contact_first_name,
        phone,
        addressLine1 as address_line_1,
        addressLine2 as address_line_2,
        city,
        state,
        postalCode as postal_code,
        trim(country) as country,
        cast(salesRepEmployeeNumber as integer) as sales_rep_employee_number,
        cast(creditLimit as decimal(10, 2)) as credit_limit,
        cast(updated_at as timestamp) as updated_at,
        cast(_extracted_at as timestamp) as extracted_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
