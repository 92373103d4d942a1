{#- The latest version of each key among the lake's batches (overlapping lookbacks, updates):
    the newest by the row's own version column when the table has one (updated_at), else the
    newest extraction. -#}
{% macro latest_per_key(relation, key_columns, version_column=none) %}
    {%- set order_by = ([version_column ~ ' desc nulls last'] if version_column else [])
        + ['_extracted_at desc', '_batch_id desc'] -%}
    select *
    from (
        select
            *,
            row_number() over (partition by {{ key_columns | join(', ') }} order by {{ order_by | join(', ') }}) as _version_rank
        from {{ relation }}
    ) as versions
    where _version_rank = 1
{% endmacro %}

{#- Whole hours since 1970 as an integer: consecutive hours differ by one on every warehouse. -#}
{% macro hour_index(timestamp_expression) %}
    {{ dbt.datediff("cast('1970-01-01 00:00:00' as timestamp)", timestamp_expression, 'hour') }}
{% endmacro %}
