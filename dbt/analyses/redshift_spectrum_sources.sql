{#- The Spectrum external tables `register_lake_sources` creates on Redshift, compiled for review
    and for the portability test: `dbt compile --target prod --select redshift_spectrum_sources`. -#}
{%- if execute and target.type == 'redshift' -%}
{{ redshift_lake_source_statements() | join(';\n\n') }};
{%- else -%}
-- Compile with --target prod to see the Redshift Spectrum DDL.
    select 1 as placeholder
{%- endif -%}
