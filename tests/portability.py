"""What in compiled SQL Redshift would refuse: the check the portability test applies to every model.

No Redshift cluster exists here, so the models compiled for the `prod` target are read with
sqlglot's Redshift dialect, and a statement is refused when:

* it does not parse into SQL sqlglot understands (it falls back to a `Command`): nothing is checked
  inside such a statement, so a model may not contain one;
* it calls a function as written that Redshift does not have (DuckDB's `arg_max`, `list`,
  `approx_quantile`, `regexp_extract`, `array_agg`, `string_agg`, `strftime`, ...) — function names
  are read from the tokens, as written, since sqlglot's parser maps many DuckDB names onto its own
  nodes and would transpile them;
* it calls a function sqlglot does not know at all (an `Anonymous` one), outside a short allowlist;
* it casts to a type Redshift does not have (HUGEINT, unsigned integers, LIST, STRUCT, MAP, UUID, JSON),
  or uses DuckDB's `::` cast.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

DUCKDB_ONLY_FUNCTIONS = {
    "approx_count_distinct",
    "approx_quantile",
    "arbitrary",
    "arg_max",
    "arg_min",
    "array_agg",
    "count_if",
    "date_diff",
    "epoch",
    "epoch_ms",
    "first",
    "generate_series",
    "histogram",
    "last",
    "list",
    "list_value",
    "make_date",
    "make_timestamp",
    "max_by",
    "min_by",
    "mode",
    "quantile",
    "quantile_cont",
    "quantile_disc",
    "regexp_extract",
    "regexp_matches",
    "starts_with",
    "strftime",
    "string_agg",
    "strptime",
    "struct_pack",
    "unnest",
}
ALLOWED_ANONYMOUS = {"datediff", "dateadd", "md5"}
UNSUPPORTED_TYPES = {
    exp.DataType.Type.INT128,
    exp.DataType.Type.UINT,
    exp.DataType.Type.UBIGINT,
    exp.DataType.Type.USMALLINT,
    exp.DataType.Type.UTINYINT,
    exp.DataType.Type.LIST,
    exp.DataType.Type.STRUCT,
    exp.DataType.Type.MAP,
    exp.DataType.Type.UUID,
    exp.DataType.Type.JSON,
    exp.DataType.Type.ARRAY,
}


def functions_as_written(tokens) -> set[str]:
    return {
        token.text.lower()
        for token, following in zip(tokens, tokens[1:], strict=False)
        if following.token_type == TokenType.L_PAREN and token.token_type != TokenType.L_PAREN
    }


def redshift_problems(sql: str, *, allow_commands: bool = False) -> list[str]:
    problems = []
    tokens = sqlglot.tokenize(sql, read="redshift")
    if any(t.token_type == TokenType.DCOLON for t in tokens):  # in code, not inside a string literal
        problems.append("DuckDB's :: cast")
    problems += [
        f"function {name}()" for name in sorted(functions_as_written(tokens) & DUCKDB_ONLY_FUNCTIONS)
    ]
    for statement in sqlglot.parse(sql, read="redshift"):
        if statement is None:
            continue
        if isinstance(statement, exp.Command):
            if not allow_commands:
                problems.append(f"a statement sqlglot cannot read: {statement.sql()[:60]!r}")
            continue
        unknown = {f.name.lower() for f in statement.find_all(exp.Anonymous)} - ALLOWED_ANONYMOUS
        problems += [f"function {name}() unknown to sqlglot's Redshift dialect" for name in sorted(unknown)]
        problems += [
            f"type {dt.this.value}" for dt in statement.find_all(exp.DataType) if dt.this in UNSUPPORTED_TYPES
        ]
    return problems
