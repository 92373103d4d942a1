{#- Models land in the schema their folder names (staging, intermediate, analytics, ml),
    not in "<target schema>_<name>": the BI tool and the recommender read stable names.

    Write-audit-publish on Redshift: a build writes and tests "<name>__wap" schemas, and
    `publish_warehouse` renames them over the live ones in one transaction. DuckDB builds in a file
    of its own instead (retail_platform.warehouse.snapshots), under the plain names. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set name = target.schema if custom_schema_name is none else custom_schema_name | trim -%}
    {%- if target.type == 'redshift' and name in wap_schemas() -%}{{ name ~ '__wap' }}{%- else -%}{{ name }}{%- endif -%}
{%- endmacro %}

{% macro wap_schemas() %}
    {{ return(['staging', 'intermediate', 'analytics', 'ml']) }}
{% endmacro %}

{#- Publish a build whose tests all passed: readers switch to it at once, in one transaction. -#}
{% macro publish_warehouse() %}
    {{ return(adapter.dispatch('publish_warehouse', 'retail')()) }}
{% endmacro %}

{% macro default__publish_warehouse() %}
    {#- DuckDB publishes by switching files (retail_platform.warehouse.snapshots). -#}
{% endmacro %}

{% macro redshift__publish_warehouse() %}
    {% call statement('publish_warehouse', auto_begin=false) %}{{ publish_warehouse_sql() }}{% endcall %}
{% endmacro %}

{% macro publish_warehouse_sql() %}
    {%- set statements = ['begin'] -%}
    {%- for name in wap_schemas() -%}
        {%- do statements.append('create schema if not exists ' ~ name) -%}
        {%- do statements.append('alter schema ' ~ name ~ ' rename to ' ~ name ~ '__old') -%}
        {%- do statements.append('alter schema ' ~ name ~ '__wap rename to ' ~ name) -%}
        {%- do statements.append('drop schema ' ~ name ~ '__old cascade') -%}
    {%- endfor -%}
    {%- do statements.append('commit') -%}
    {{ return(statements | join(';\n') ~ ';') }}
{% endmacro %}
