{#- Production export of the training table: Redshift UNLOADs it to the lake as Parquet, with the
    interface's camelCase column names and a verbose manifest (row counts) beside the files. -#}
{% macro unload_training_table(location) %}
    {%- for statement in unload_training_table_statements(location) -%}
        {% call statement('unload_' ~ loop.index, auto_begin=false) %}{{ statement }}{% endcall %}
    {%- endfor -%}
{% endmacro %}

{% macro unload_training_table_statements(location) %}
    {%- set columns = ['customerNumber', 'city', 'state', 'postalCode', 'country', 'creditLimit', 'productCode',
                       'productLine', 'productScale', 'quantityInStock', 'buyPrice', 'MSRP', 'productRating'] -%}
    {%- set select_list = [] -%}
    {%- for column in columns -%}{%- do select_list.append(column | lower ~ ' as "' ~ column ~ '"') -%}{%- endfor -%}
    {%- set query = 'select ' ~ select_list | join(', ') ~ ' from ' ~ ref('ratings_ml_training') -%}
    {{ return([
        'set enable_case_sensitive_identifier to true',
        "unload ('" ~ query | replace("'", "''") ~ "') to '" ~ location ~ "/part-'"
        ~ " iam_role '" ~ env_var('REDSHIFT_UNLOAD_ROLE_ARN', 'arn:aws:iam::000000000000:role/unload') ~ "'"
        ~ " format as parquet manifest verbose allowoverwrite"
    ]) }}
{% endmacro %}

{#- The training table's companions in the same export build: each relation UNLOADed to its own
    subfolder of the build (location/<model>/part-...), column names as the models have them. -#}
{% macro unload_ml_companions(location) %}
    {%- for statement in unload_ml_companions_statements(location) -%}
        {% call statement('unload_companion_' ~ loop.index, auto_begin=false) %}{{ statement }}{% endcall %}
    {%- endfor -%}
{% endmacro %}

{% macro unload_ml_companions_statements(location) %}
    {%- set statements = [] -%}
    {%- for model in ['fct_customer_product_interactions', 'fct_popular_products_7d', 'dim_products'] -%}
        {%- set query = 'select * from ' ~ ref(model) -%}
        {%- do statements.append(
            "unload ('" ~ query | replace("'", "''") ~ "') to '" ~ location ~ "/" ~ model ~ "/part-'"
            ~ " iam_role '" ~ env_var('REDSHIFT_UNLOAD_ROLE_ARN', 'arn:aws:iam::000000000000:role/unload') ~ "'"
            ~ " format as parquet manifest verbose allowoverwrite"
        ) -%}
    {%- endfor -%}
    {{ return(statements) }}
{% endmacro %}
