with source as (
    select * from {{ source('classicmodels', 'employees') }}
),

latest as (
    {{ latest_per_key('source', ['employeeNumber']) }}
),

renamed as (
    select
        cast(employeeNumber as integer) as employee_number,
        lastName as last_name,
        firstName as first_name,
        extension,
        email,
        officeCode as office_code,
        cast(reportsTo as integer) as reports_to,
        jobTitle as job_title,
        cast(_extracted_at as timestamp) as extracted_at,
        _batch_id as batch_id
    from latest
)

select * from renamed
