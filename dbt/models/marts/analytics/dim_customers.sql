with customers as (
    select * from {{ ref('stg_classicmodels__customers') }}
),

regions as (
    select * from {{ ref('int_customer_regions') }}
)

select
    cast(customers.customer_number as integer) as customer_number,
    cast(customers.customer_name as {{ dbt.type_string() }}) as customer_name,
    cast(customers.contact_first_name as {{ dbt.type_string() }}) as contact_first_name,
    cast(customers.contact_last_name as {{ dbt.type_string() }}) as contact_last_name,
    cast(customers.city as {{ dbt.type_string() }}) as city,
    cast(customers.state as {{ dbt.type_string() }}) as state,
    cast(customers.postal_code as {{ dbt.type_string() }}) as postal_code,
    cast(customers.country as {{ dbt.type_string() }}) as country,
    cast(regions.region as {{ dbt.type_string() }}) as region,
    cast(customers.credit_limit as decimal(10, 2)) as credit_limit,
    cast(customers.sales_rep_employee_number as integer) as sales_rep_employee_number
from customers
inner join regions on customers.customer_number = regions.customer_number
