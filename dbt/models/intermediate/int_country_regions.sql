-- Each country's sales region, for roll-ups of country-level facts (demand, spikes). A country
-- whose customers span regions takes the first in name order: stable across builds.
with customers as (
    select * from {{ ref('stg_classicmodels__customers') }}
),

regions as (
    select * from {{ ref('int_customer_regions') }}
)

select
    customers.country,
    min(regions.region) as region
from customers
inner join regions on customers.customer_number = regions.customer_number
group by customers.country
