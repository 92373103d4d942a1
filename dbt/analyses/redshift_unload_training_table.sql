-- depends_on: {{ ref('ratings_ml_training') }}
{#- The production export of ratings_ml_training, compiled for review and the portability test. -#}
{%- if execute and target.type == 'redshift' -%}
{{ unload_training_table_statements(var('lake_uri') ~ '/ml/ratings_ml_training/build_id=example') | join(';\n\n') }};
{%- else -%}
-- Compile with --target prod to see the Redshift UNLOAD.
    select 1 as placeholder
{%- endif -%}
