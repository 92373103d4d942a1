{#- The statements `publish_warehouse` runs on Redshift once a build passed its tests (write-audit-
    publish), compiled for review and for the portability test: `dbt compile --target prod`. -#}
{%- if execute and target.type == 'redshift' -%}
{{ publish_warehouse_sql() }}
{%- else -%}
-- Compile with --target prod to see the Redshift statements.
    select 1 as placeholder
{%- endif -%}
