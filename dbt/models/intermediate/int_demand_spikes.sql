-- Demand spikes: runs of consecutive hours in which a product's orders in a country rise,
-- each hour above its trailing baseline and above its share of the store's orders that hour.
-- Parameters are vars in dbt_project.yml.
{%- set baseline_days = var('spike_baseline_days') %}

with hourly as (
    select
        product_code,
        country,
        order_hour,
        orders,
        cast(order_hour as date) as order_day,
        {{ hour_index('order_hour') }} as hour_index
    from {{ ref('int_demand_by_product_country_hour') }}
    where has_order_time  -- spikes need the hourly grain
),

daily as (
    select
        product_code,
        country,
        order_day,
        sum(orders) as orders
    from hourly
    group by product_code, country, order_day
),

-- The store's orders each hour (order lines: an order counts once per product it holds), the
-- volume a pair's share of that hour is taken of.
store_hours as (
    select
        order_hour,
        sum(orders) as orders
    from hourly
    group by order_hour
),

-- Each product's, each country's and the whole store's orders before each day it sold: the shares a
-- pair is expected to take of an hour. All the days before, not a trailing window: a store whose
-- recent days are thin (a small history, a live store just started) still has its mix.
{%- for key in ['product_code', 'country'] %}
    {{ key }}_days as (
        select {{ key }}, order_day, sum(orders) as orders
        from daily
        group by {{ key }}, order_day
    ),

    {{ key }}_prior as (
        select
            {{ key }},
            order_day,
            coalesce(sum(orders) over (
                partition by {{ key }} order by order_day rows between unbounded preceding and 1 preceding
            ), 0) as prior_orders
        from {{ key }}_days
    ),

{% endfor -%}
store_days as (
    select order_day, sum(orders) as orders
    from daily
    group by order_day
),

store_prior as (
    select
        order_day,
        coalesce(sum(orders) over (order by order_day rows between unbounded preceding and 1 preceding), 0)
            as prior_orders
    from store_days
),

sequenced as (
    select
        *,
        lag(hour_index) over (partition by product_code, country order by hour_index) as previous_hour_index,
        lag(orders) over (partition by product_code, country order by hour_index) as previous_row_orders
    from hourly
),

candidates as (
    select
        product_code,
        country,
        order_hour,
        order_day,
        hour_index,
        orders,
        -- The previous hour without sales is absent from the sparse series: it had 0 orders.
        case when previous_hour_index = hour_index - 1 then previous_row_orders else 0 end as previous_hour_orders
    from sequenced
    where orders >= {{ var('spike_min_orders') }}
),

-- What the store's volume that hour gives the pair by its product's and its country's shares of the
-- days before: the whole store busier (a sale, a live store far busier than its history) raises
-- every pair's expectation alike, so only a pair that outgrows its share is a spike. No days before:
-- nothing to expect (0).
shared as (
    select
        candidates.product_code,
        candidates.country,
        candidates.hour_index,
        case
            when store_prior.prior_orders > 0
                then
                    store_hours.orders
                    * (product_code_prior.prior_orders * 1.0 / store_prior.prior_orders)
                    * (country_prior.prior_orders * 1.0 / store_prior.prior_orders)
            else 0
        end as share_orders_expected
    from candidates
    inner join store_hours on candidates.order_hour = store_hours.order_hour
    inner join store_prior on candidates.order_day = store_prior.order_day
    inner join product_code_prior
        on
            candidates.product_code = product_code_prior.product_code
            and candidates.order_day = product_code_prior.order_day
    inner join country_prior
        on candidates.country = country_prior.country and candidates.order_day = country_prior.order_day
),

baselined as (
    select
        candidates.product_code,
        candidates.country,
        candidates.order_hour,
        candidates.hour_index,
        candidates.orders,
        candidates.previous_hour_orders,
        coalesce(sum(daily.orders), 0) * 1.0 / {{ baseline_days * 24 }} as baseline_orders_per_hour,
        max(shared.share_orders_expected) as share_orders_expected
    from candidates
    inner join shared
        on
            candidates.product_code = shared.product_code
            and candidates.country = shared.country
            and candidates.hour_index = shared.hour_index
    left join daily
        on
            candidates.product_code = daily.product_code
            and candidates.country = daily.country
            and daily.order_day >= {{ dbt.dateadd('day', -baseline_days, 'candidates.order_day') }}
            and daily.order_day < candidates.order_day
    group by
        candidates.product_code,
        candidates.country,
        candidates.order_hour,
        candidates.hour_index,
        candidates.orders,
        candidates.previous_hour_orders
),

-- What the hour is judged against: the higher of the two expectations.
expected as (
    select
        *,
        greatest(baseline_orders_per_hour, share_orders_expected) as expected_orders
    from baselined
),

rising as (
    select
        *,
        -- Consecutive rising hours share (hour_index - their rank): the classic gaps-and-islands key.
        hour_index - row_number() over (partition by product_code, country order by hour_index) as run_key
    from expected
    where
        orders > previous_hour_orders
        and orders >= {{ var('spike_baseline_ratio') }} * expected_orders
        -- Orders a pair expects about once an hour also come 3 at a time by chance (Poisson): the
        -- ratio alone lets a busy store's thousands of such pairs through, so the hour must also
        -- stand spike_min_sigmas standard deviations (the expectation's square root) above it.
        and orders >= expected_orders + {{ var('spike_min_sigmas') }} * sqrt(expected_orders)
),

runs as (
    select
        product_code,
        country,
        run_key,
        min(order_hour) as spike_start,
        max(order_hour) as last_rising_hour,
        count(*) as rising_hours,
        min(orders) as first_hour_orders,
        max(orders) as peak_orders,
        max(baseline_orders_per_hour) as baseline_orders_per_hour,
        max(share_orders_expected) as share_orders_expected,
        max(expected_orders) as expected_orders
    from rising
    group by product_code, country, run_key
    having
        count(*) >= {{ var('spike_min_rising_hours') }}
        and max(orders) >= {{ var('spike_min_peak_orders') }}
)

select
    product_code,
    country,
    spike_start,
    last_rising_hour,
    rising_hours,
    first_hour_orders,
    peak_orders,
    baseline_orders_per_hour,
    share_orders_expected,
    expected_orders
from runs
