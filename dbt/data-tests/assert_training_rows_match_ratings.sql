-- Every rating whose customer and product exist becomes exactly one training row.
select count(*) as missing
from {{ ref('stg_classicmodels__ratings') }} as ratings
inner join {{ ref('stg_classicmodels__customers') }} as customers on ratings.customer_number = customers.customer_number
inner join {{ ref('stg_classicmodels__products') }} as products on ratings.product_code = products.product_code
having count(*) <> (select count(*) from {{ ref('ratings_ml_training') }})
