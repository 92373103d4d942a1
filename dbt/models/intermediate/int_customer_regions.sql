-- A customer's region is the sales territory of their rep's office; customers without a rep
-- take the territory most of their country's customers have.
with customers as (
    select * from {{ ref('stg_classicmodels__customers') }}
),

employees as (
    select * from {{ ref('stg_classicmodels__employees') }}
),

offices as (
    select * from {{ ref('stg_classicmodels__offices') }}
),

rep_territory as (
    select
        customers.customer_number,
        customers.country,
        offices.territory
    from customers
    left join employees on customers.sales_rep_employee_number = employees.employee_number
    left join offices on employees.office_code = offices.office_code
),

country_votes as (
    select
        country,
        territory,
        row_number() over (partition by country order by count(*) desc, territory) as vote_rank
    from rep_territory
    where territory is not null
    group by country, territory
)

select
    rep_territory.customer_number,
    coalesce(rep_territory.territory, country_votes.territory, 'Unassigned') as region
from rep_territory
left join country_votes
    on rep_territory.country = country_votes.country and country_votes.vote_rank = 1
