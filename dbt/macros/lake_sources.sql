{#-
    Make the lake's committed batches the warehouse's sources, before every build.

    The extractor keeps, per table, `raw/<source>/<table>/_committed.manifest`: the data files of
    committed batches only (Redshift Spectrum's manifest format). Both warehouses read that index,
    so a batch is seen whole or not at all, and a full snapshot hides the batches before it.

    Every source whose sources YAML (generated from its contract) names a `lake_prefix` is a lake
    source: a second source contract gets its relations here with no change to this macro. Each
    relation is `lake_raw.<source>__<table>` (sources may share table names).

    DuckDB: one view per table over exactly those Parquet files.
    Redshift: one Spectrum external table per table whose LOCATION is that manifest.

    Run it with `dbt run-operation register_lake_sources` (the transform DAG's first task). The
    Redshift statements also compile as the analysis `redshift_spectrum_sources` (`dbt compile
    --target prod`), which is how a test checks them without a cluster.
-#}
{% macro register_lake_sources() %}
    {{ return(adapter.dispatch('register_lake_sources', 'retail')()) }}
{% endmacro %}

{% macro lake_sources() %}
    {%- set found = [] -%}
    {%- for node in graph.sources.values() if node.source_meta.get('lake_prefix') -%}
        {%- do found.append(node) -%}
    {%- endfor -%}
    {{ return(found | sort(attribute='unique_id')) }}
{% endmacro %}

{% macro lake_table_uri(src) %}
    {%- set lake = var('lake_uri') -%}
    {%- if not lake -%}
        {{ exceptions.raise_compiler_error("register_lake_sources: RETAIL_LAKE_URI (the lake root) is not set") }}
    {%- endif -%}
    {{ return(lake.rstrip('/') ~ '/' ~ src.source_meta.lake_prefix ~ '/' ~ src.name) }}
{% endmacro %}

{#- A SQL string literal: a lake path may hold a quote. -#}
{% macro sql_literal(value) %}
    {{ return("'" ~ (value | replace("'", "''")) ~ "'") }}
{% endmacro %}

{#- The sources' data types are written for Redshift; DuckDB spells binary as blob. -#}
{% macro duckdb_type(data_type) %}
    {{ return('blob' if data_type | lower == 'varbyte' else data_type) }}
{% endmacro %}

{% macro duckdb__register_lake_sources() %}
    {%- set sources = lake_sources() -%}
    {% do run_query('create schema if not exists ' ~ adapter.quote(sources[0].schema)) %}
    {%- for src in sources -%}
        {%- set index = lake_table_uri(src) ~ '/_committed.manifest' -%}
        {%- set files = [] -%}
        {%- set listed = run_query('select count(*) from glob(' ~ sql_literal(index) ~ ')') -%}
        {%- if listed.columns[0].values()[0] > 0 -%}
            {%- set entries = run_query('select unnest(entries).url from read_json(' ~ sql_literal(index) ~ ')') -%}
            {%- for url in entries.columns[0].values() -%}{%- do files.append(url) -%}{%- endfor -%}
        {%- endif -%}
        {%- set present = [] -%}
        {%- if files -%}
            {%- set literals = [] -%}
            {%- for url in files -%}{%- do literals.append(sql_literal(url)) -%}{%- endfor -%}
            {%- set scan = 'read_parquet([' ~ literals | join(', ') ~ '], union_by_name = true)' -%}
            {%- set described = run_query('describe select * from ' ~ scan) -%}
            {%- for name in described.columns[0].values() -%}{%- do present.append(name | lower) -%}{%- endfor -%}
        {%- endif -%}
        {%- set columns = [] -%}
        {%- for column in src.columns.values() -%}
            {%- if column.name | lower in present -%}
                {%- do columns.append(adapter.quote(column.name)) -%}
            {%- else -%}
                {#- An optional column the replica does not have (yet): typed NULLs keep staging working. -#}
                {%- do columns.append('cast(null as ' ~ duckdb_type(column.data_type) ~ ') as ' ~ adapter.quote(column.name)) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if files -%}
            {%- set body = 'select ' ~ columns | join(', ') ~ ', _extracted_at, _batch_id from ' ~ scan -%}
        {%- else -%}
            {%- set body = 'select ' ~ columns | join(', ')
                ~ ', cast(null as timestamptz) as _extracted_at, cast(null as varchar) as _batch_id where false' -%}
        {%- endif -%}
        {%- set view = adapter.quote(src.schema) ~ '.' ~ adapter.quote(src.identifier) -%}
        {% do run_query('create or replace view ' ~ view ~ ' as ' ~ body) %}
        {{ log('lake source ' ~ src.source_name ~ '.' ~ src.name ~ ': ' ~ files | length ~ ' committed files', info=true) }}
    {%- endfor -%}
{% endmacro %}

{% macro redshift__register_lake_sources() %}
    {#- External DDL cannot run inside a transaction block: one autocommitted statement at a time. -#}
    {%- for statement in redshift_lake_source_statements() -%}
        {% call statement('lake_source_' ~ loop.index, auto_begin=false) %}{{ statement }}{% endcall %}
    {%- endfor -%}
{% endmacro %}

{% macro redshift_lake_source_statements() %}
    {%- set sources = lake_sources() -%}
    {%- set statements = [
        "create external schema if not exists " ~ sources[0].schema
        ~ " from data catalog database " ~ sql_literal(env_var('REDSHIFT_SPECTRUM_DATABASE', 'retail_lake'))
        ~ " iam_role " ~ sql_literal(env_var('REDSHIFT_SPECTRUM_ROLE_ARN', 'arn:aws:iam::000000000000:role/spectrum'))
        ~ " create external database if not exists"
    ] -%}
    {%- for src in sources -%}
        {%- set columns = [] -%}
        {%- for column in src.columns.values() -%}
            {%- do columns.append(column.name | lower ~ ' ' ~ column.data_type) -%}
        {%- endfor -%}
        {%- do statements.append('drop table if exists ' ~ src.schema ~ '.' ~ src.identifier) -%}
        {%- do statements.append(
            'create external table ' ~ src.schema ~ '.' ~ src.identifier
            ~ ' (' ~ columns | join(', ') ~ ', _extracted_at timestamp, _batch_id varchar(64))'
            ~ " stored as parquet location " ~ sql_literal(lake_table_uri(src) ~ '/_committed.manifest')) -%}
    {%- endfor -%}
    {{ return(statements) }}
{% endmacro %}
