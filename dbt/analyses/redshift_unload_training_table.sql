-- depends_on: {{ ref('ratings_ml_training') }}
-- depends_on: {{ ref('fct_customer_product_interactions') }}
-- depends_on: {{ ref('fct_popular_products_7d') }}
-- depends_on: {{ ref('dim_products') }}
{#- The production export of ratings_ml_training and its companions, compiled for review and the
    portability test. -#}
{%- if execute and target.type == 'redshift' -%}
{%- set location = var('lake_uri') ~ '/ml/ratings_ml_training/build_id=example' -%}
{{ (unload_training_table_statements(location) + unload_ml_companions_statements(location)) | join(';\n\n') }};
{%- else -%}
-- Compile with --target prod to see the Redshift UNLOAD.
    select 1 as placeholder
{%- endif -%}
