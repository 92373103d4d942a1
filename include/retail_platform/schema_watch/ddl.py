"""Apply planned MySQL DDL to the contract's schema, to see a change's impact before it ships.

Understood (via sqlglot's MySQL dialect): ALTER TABLE ... ADD/DROP/MODIFY/CHANGE/RENAME COLUMN,
ALTER COLUMN ... SET/DROP DEFAULT, DROP/ADD PRIMARY KEY; CREATE TABLE; DROP TABLE; RENAME TABLE.
Anything else is an error that quotes the statement: an impact check that guesses is worse than none.
"""

from __future__ import annotations

import copy
import re

import sqlglot
from sqlglot import exp

from retail_platform.schema_watch.changes import ColumnShape, TableShape

_RENAME_TABLE = re.compile(r"^\s*RENAME\s+TABLE\s+(.+)$", re.IGNORECASE | re.DOTALL)


class DDLError(ValueError):
    pass


def _name(node) -> str:
    return node.name if hasattr(node, "name") else str(node)


def _column_type(definition: exp.ColumnDef) -> tuple[str, bool]:
    kind = definition.args.get("kind")
    if kind is None:
        raise DDLError(f"column {definition.name}: no type given")
    type_sql = kind.sql("mysql").lower().replace(", ", ",")
    nullable = True
    for constraint in definition.args.get("constraints") or []:
        if isinstance(constraint.kind, exp.NotNullColumnConstraint):
            nullable = bool(constraint.kind.args.get("allow_null"))
        if isinstance(constraint.kind, exp.PrimaryKeyColumnConstraint):
            nullable = False
    return type_sql, nullable


def _statement_text(statement: exp.Expression) -> str:
    return statement.sql("mysql")[:200]


def apply_ddl(ddl: str, tables: dict[str, TableShape]) -> dict[str, TableShape]:
    """The schema after the statements; raises DDLError naming the statement it cannot apply."""
    proposed = copy.deepcopy(tables)
    statements = [s for s in sqlglot.parse(ddl, read="mysql") if s is not None] if ddl.strip() else []
    if not statements:
        raise DDLError("no DDL statement given")
    for number, statement in enumerate(statements, start=1):
        where = f"statement {number} ({_statement_text(statement)})"
        if isinstance(statement, exp.Command):
            match = _RENAME_TABLE.match(statement.sql("mysql"))
            if match and statement.name.upper() == "RENAME":
                for pair in match.group(1).split(","):
                    old, _, new = pair.strip().partition(" ")
                    new = new.strip()
                    if not new.upper().startswith("TO "):
                        raise DDLError(f"{where}: cannot read RENAME TABLE {pair.strip()!r}")
                    old, new = old.strip("`"), new[3:].strip().strip("`")
                    shape = _table(proposed, old, where)
                    proposed[new] = TableShape(new, shape.columns, shape.primary_key)
                    del proposed[old]
                continue
            raise DDLError(f"{where}: not understood as MySQL DDL")
        if isinstance(statement, exp.Alter):
            _apply_alter(statement, proposed, where)
        elif isinstance(statement, exp.Drop) and (statement.args.get("kind") or "").upper() == "TABLE":
            name = _name(statement.this or (statement.args.get("tables") or [None])[0])
            if name not in proposed and not statement.args.get("exists"):
                raise DDLError(f"{where}: table {name} does not exist")
            proposed.pop(name, None)
        elif isinstance(statement, exp.Create) and (statement.args.get("kind") or "").upper() == "TABLE":
            schema = statement.this
            name = _name(schema.this)
            columns, keys = [], []
            for item in schema.expressions:
                if isinstance(item, exp.ColumnDef):
                    type_sql, nullable = _column_type(item)
                    columns.append(ColumnShape(item.name, type_sql, nullable, len(columns) + 1))
                    if any(
                        isinstance(c.kind, exp.PrimaryKeyColumnConstraint)
                        for c in item.args.get("constraints") or []
                    ):
                        keys.append(item.name)
                elif isinstance(item, exp.PrimaryKey):
                    keys = [_name(e) for e in item.expressions]
            proposed[name] = TableShape(name, columns, keys)
        else:
            raise DDLError(f"{where}: only ALTER/CREATE/DROP/RENAME TABLE statements are checked")
    return proposed


def _table(tables: dict[str, TableShape], name: str, where: str) -> TableShape:
    if name not in tables:
        raise DDLError(f"{where}: table {name} is not in the source contract")
    return tables[name]


def _renumber(shape: TableShape) -> None:
    shape.columns = [
        ColumnShape(c.name, c.type, c.nullable, i + 1, c.default, c.optional)
        for i, c in enumerate(shape.columns)
    ]


def _apply_alter(statement: exp.Alter, tables: dict[str, TableShape], where: str) -> None:
    shape = _table(tables, _name(statement.this), where)
    for action in statement.args.get("actions") or []:
        if isinstance(action, exp.Command):
            raise DDLError(f"{where}: cannot read the action {action.sql('mysql')!r}")
        if isinstance(action, exp.ColumnDef):  # ADD COLUMN
            if shape.column(action.name):
                raise DDLError(f"{where}: column {shape.name}.{action.name} already exists")
            type_sql, nullable = _column_type(action)
            shape.columns.append(ColumnShape(action.name, type_sql, nullable, len(shape.columns) + 1))
        elif isinstance(action, exp.Drop):
            if (action.args.get("kind") or "").upper() not in ("COLUMN", ""):
                raise DDLError(f"{where}: cannot read the action {action.sql('mysql')!r}")
            targets = action.args.get("tables") or ([action.this] if action.this is not None else [])
            for target in targets:  # sqlglot keeps the dropped columns under "tables"
                name = _name(target)
                if not shape.column(name):
                    raise DDLError(f"{where}: column {shape.name}.{name} does not exist")
                shape.columns = [c for c in shape.columns if c.name != name]
            _renumber(shape)
        elif isinstance(action, exp.RenameColumn):
            old, new = _name(action.this), _name(action.args["to"])
            column = shape.column(old)
            if column is None:
                raise DDLError(f"{where}: column {shape.name}.{old} does not exist")
            shape.columns = [
                ColumnShape(new, c.type, c.nullable, c.position, c.default) if c.name == old else c
                for c in shape.columns
            ]
            shape.primary_key = [new if k == old else k for k in shape.primary_key]
        elif type(action).__name__ == "ModifyColumn":  # MODIFY COLUMN / CHANGE COLUMN old new ...
            definition = action.this
            if not isinstance(definition, exp.ColumnDef):
                raise DDLError(f"{where}: cannot read the action {action.sql('mysql')!r}")
            renamed_from = action.args.get("rename_from")
            old_name = _name(renamed_from) if renamed_from is not None else definition.name
            column = shape.column(old_name)
            if column is None:
                raise DDLError(f"{where}: column {shape.name}.{old_name} does not exist")
            type_sql, nullable = _column_type(definition)
            shape.columns = [
                ColumnShape(definition.name, type_sql, nullable, c.position, c.default)
                if c.name == old_name
                else c
                for c in shape.columns
            ]
            shape.primary_key = [definition.name if k == old_name else k for k in shape.primary_key]
        elif isinstance(action, exp.AlterColumn):
            name = _name(action.this)
            column = shape.column(name)
            if column is None:
                raise DDLError(f"{where}: column {shape.name}.{name} does not exist")
            default = action.args.get("default")
            new_default = (
                None if action.args.get("drop") else (default.sql("mysql") if default else column.default)
            )
            shape.columns = [
                ColumnShape(c.name, c.type, c.nullable, c.position, new_default) if c.name == name else c
                for c in shape.columns
            ]
        elif type(action).__name__ == "DropPrimaryKey":
            shape.primary_key = []
        elif isinstance(action, exp.AddConstraint):
            key = action.find(exp.PrimaryKey)
            if key is None:
                continue  # foreign keys, checks, indexes: not part of the watched shape
            shape.primary_key = [_name(e) for e in key.expressions]
        else:
            raise DDLError(f"{where}: cannot read the action {action.sql('mysql')!r}")
