-- Demand spikes: runs of consecutive hours in which a product's orders in a country rise,
-- each hour above its trailing baseline. Parameters are vars in dbt_project.yml.
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

baselined as (
    select
        candidates.product_code,
        candidates.country,
        candidates.order_hour,
        candidates.hour_index,
        candidates.orders,
        candidates.previous_hour_orders,
        coalesce(sum(daily.orders), 0) * 1.0 / {{ baseline_days * 24 }} as baseline_orders_per_hour
    from candidates
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

rising as (
    select
        *,
        -- Consecutive rising hours share (hour_index - their rank): the classic gaps-and-islands key.
        hour_index - row_number() over (partition by product_code, country order by hour_index) as run_key
    from baselined
    where
        orders > previous_hour_orders
        and orders >= {{ var('spike_baseline_ratio') }} * baseline_orders_per_hour
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
        max(baseline_orders_per_hour) as baseline_orders_per_hour
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
    baseline_orders_per_hour
from runs
