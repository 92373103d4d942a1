-- Every rating whose customer and product exist is exactly one training row with that rating, and
-- every training row is such a rating: an anti-join both ways on (customer, product, rating).
with expected as (
    select
        ratings.customer_number,
        ratings.product_code,
        ratings.product_rating
    from {{ ref('stg_classicmodels__ratings') }} as ratings
    inner join {{ ref('stg_classicmodels__customers') }} as customers
        on ratings.customer_number = customers.customer_number
    inner join {{ ref('stg_classicmodels__products') }} as products
        on ratings.product_code = products.product_code
),

training as (
    select
        customerNumber as customer_number,
        productCode as product_code,
        productRating as product_rating
    from {{ ref('ratings_ml_training') }}
)

select
    'missing from the training table' as problem,
    expected.customer_number,
    expected.product_code
from expected
left join training
    on
        expected.customer_number = training.customer_number
        and expected.product_code = training.product_code
        and expected.product_rating = training.product_rating
where training.customer_number is null

union all

select
    'not a rating' as problem,
    training.customer_number,
    training.product_code
from training
left join expected
    on
        training.customer_number = expected.customer_number
        and training.product_code = expected.product_code
        and training.product_rating = expected.product_rating
where expected.customer_number is null
