-- Demand spikes for the marketing dashboard, newest first. `is_rising` marks a spike whose
-- rise reaches the latest hour in the data: it is happening now.
with spikes as (
    select * from {{ ref('int_demand_spikes') }}
),

latest as (
    select max(order_hour) as latest_hour
    from {{ ref('int_demand_by_product_country_hour') }}
    where has_order_time
),

products as (
    select * from {{ ref('dim_products') }}
),

regions as (
    select * from {{ ref('int_country_regions') }}
)

select
    cast(
        {{ dbt.hash(dbt.concat(["spikes.product_code", "'|'", "spikes.country", "'|'",
                                "cast(spikes.spike_start as " ~ dbt.type_string() ~ ")"])) }}
        as {{ dbt.type_string() }}
    ) as spike_id,
    cast(spikes.product_code as {{ dbt.type_string() }}) as product_code,
    cast(products.product_name as {{ dbt.type_string() }}) as product_name,
    cast(products.product_line as {{ dbt.type_string() }}) as product_line,
    cast(spikes.country as {{ dbt.type_string() }}) as country,
    cast(regions.region as {{ dbt.type_string() }}) as region,
    cast(spikes.spike_start as timestamp) as spike_start,
    cast(spikes.last_rising_hour as timestamp) as last_rising_hour,
    cast(spikes.rising_hours as integer) as rising_hours,
    cast(spikes.first_hour_orders as bigint) as first_hour_orders,
    cast(spikes.peak_orders as bigint) as peak_orders,
    cast(spikes.baseline_orders_per_hour as double precision) as baseline_orders_per_hour,
    -- Peak orders an hour over what the pair was expected to sell (the higher of its baseline and
    -- its share of the store's hour: a busy store's spike is not thousands of times its usual),
    -- floored at one order a day.
    cast(
        spikes.peak_orders / case
            when spikes.expected_orders > 1.0 / 24 then spikes.expected_orders else 1.0 / 24
        end as double precision
    ) as strength,
    cast(spikes.last_rising_hour = latest.latest_hour as boolean) as is_rising
from spikes
cross join latest
inner join products on spikes.product_code = products.product_code
left join regions on spikes.country = regions.country
