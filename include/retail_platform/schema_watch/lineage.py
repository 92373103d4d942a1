"""Column-level lineage of the dbt project, from the compiled manifest (sqlglot), and the impact
of a change to a source column: the models that read it, the exposures that show it, the
training table's columns that carry it, and the tests on it.

For each model, in dependency order, the compiled SQL is qualified against the columns of its
parents (sources from their YAML, models from the previous steps). Two relations are recorded:

* ``outputs``: each output column's upstream columns (sqlglot lineage: projections through CTEs);
* ``reads``: every upstream column the model references anywhere (joins, filters, windows too).

The index is cached beside the manifest, keyed by the manifest's checksum.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
INDEX_FILE = "column_lineage.json"
INDEX_VERSION = 4


def _relation(node: dict) -> str:
    return f"{node['schema']}.{node.get('alias') or node.get('identifier') or node['name']}".lower()


def build_index(manifest: dict, dialect: str = "duckdb") -> dict:
    import sqlglot
    from sqlglot import exp
    from sqlglot.lineage import lineage
    from sqlglot.optimizer.pushdown_projections import pushdown_projections
    from sqlglot.optimizer.qualify import qualify

    schema: dict = {}
    relations: dict[str, dict] = {}

    def register(node: dict, columns: list[str]) -> None:
        schema.setdefault(node["database"], {}).setdefault(node["schema"], {})[
            node.get("alias") or node.get("identifier") or node["name"]
        ] = {c: "text" for c in columns}

    for uid, source in manifest["sources"].items():
        register(source, list(source["columns"]))
        relations[_relation(source)] = {
            "unique_id": uid,
            "kind": "source",
            "name": source["name"],
            "source_name": source["source_name"],
            "columns": list(source["columns"]),
        }
    models = {uid: n for uid, n in manifest["nodes"].items() if n["resource_type"] == "model"}
    order: list[str] = []
    seen: set[str] = set()

    def visit(uid: str) -> None:
        if uid in seen or uid not in models:
            return
        seen.add(uid)
        for parent in models[uid]["depends_on"]["nodes"]:
            visit(parent)
        order.append(uid)

    for uid in sorted(models):
        visit(uid)
    model_entries = {}
    for uid in order:
        node = models[uid]
        sql = node.get("compiled_code")
        entry = {
            "unique_id": uid,
            "kind": "model",
            "name": node["name"],
            "layer": node["fqn"][1] if len(node["fqn"]) > 2 else "",
            "outputs": {},
            "reads": [],
        }
        if not sql:
            raise ValueError(
                f"{uid} has no compiled SQL: build the index from a compiled manifest (dbt compile)"
            )
        tree = qualify(
            sqlglot.parse_one(sql, read=dialect),
            schema=schema,
            dialect=dialect,
            validate_qualify_columns=False,
            quote_identifiers=False,
        )
        # `select * from ref(...)` CTEs expand to every parent column: keep only what is used.
        tree = pushdown_projections(tree)
        outputs = [s.alias_or_name for s in tree.selects]
        declared = {name.lower(): name for name in node.get("columns", {})}
        register(node, outputs)
        base_tables = {}
        for table in tree.find_all(exp.Table):
            if table.db:
                base_tables[table.alias_or_name.lower()] = f"{table.db}.{table.name}".lower()
        for column in outputs:
            upstream = set()
            try:
                graph = lineage(column, tree, schema=schema, dialect=dialect)
                for step in graph.walk():
                    if not step.downstream and isinstance(step.expression, exp.Table) and step.expression.db:
                        upstream.add(
                            f"{step.expression.db}.{step.expression.name}.{step.name.split('.')[-1]}".lower().replace(
                                '"', ""
                            )
                        )
            except Exception as exc:  # one unparseable column must not hide the rest
                log.warning("lineage of %s.%s: %s", node["name"], column, exc)
            entry["outputs"][declared.get(column.lower(), column.lower())] = sorted(upstream)
        # Every column referenced where a base relation is in scope (joins, filters, windows).
        reads = set()
        parent_columns = {
            rel: {c.lower() for c in cols}
            for db in schema.values()
            for sch, tables in db.items()
            for name, cols in tables.items()
            for rel in [f"{sch}.{name}".lower()]
        }
        in_scope = set(base_tables.values())
        for col in tree.find_all(exp.Column):
            name = col.name.lower()
            for rel in in_scope:
                if name in parent_columns.get(rel, ()):
                    reads.add(f"{rel}.{name}")
        entry["reads"] = sorted(reads | {u for ups in entry["outputs"].values() for u in ups})
        model_entries[_relation(node)] = entry
    relations.update(model_entries)
    tests = []
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] != "test":
            continue
        metadata = node.get("test_metadata") or {}
        column = metadata.get("kwargs", {}).get("column_name") or node.get("column_name")
        referenced: list[str] = []
        if not metadata and node.get("compiled_code"):
            # A singular test: the columns its SQL mentions.
            try:
                parsed = sqlglot.parse_one(node["compiled_code"], read=dialect)
                referenced = sorted({c.name.lower() for c in parsed.find_all(exp.Column)})
            except Exception:  # an unparseable test is matched by its parents only
                referenced = []
        tests.append(
            {
                "unique_id": uid,
                "name": node["name"],
                "depends_on": node["depends_on"]["nodes"],
                "column": column.lower() if column else None,
                "columns": referenced,
                "attached_to": node.get("attached_node"),
            }
        )
    exposures = [
        {
            "name": e["name"],
            "label": e.get("label"),
            "owner": e.get("owner", {}).get("name"),
            "depends_on": e["depends_on"]["nodes"],
        }
        for e in manifest.get("exposures", {}).values()
    ]
    by_uid = {v["unique_id"]: k for k, v in relations.items()}
    return {
        "version": INDEX_VERSION,
        "relations": relations,
        "by_unique_id": by_uid,
        "tests": tests,
        "exposures": exposures,
    }


def manifest_checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:20]


def load_index(manifest_path: Path) -> dict:
    """The cached index for this manifest, built (and cached) when missing or stale."""
    checksum = manifest_checksum(manifest_path)
    cache = manifest_path.parent / INDEX_FILE
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("manifest_checksum") == checksum and cached.get("version") == INDEX_VERSION:
            return cached
    index = build_index(json.loads(manifest_path.read_text()))
    index["manifest_checksum"] = checksum
    cache.write_text(json.dumps(index))
    return index


@dataclass
class Impact:
    models: dict[str, list[str]] = field(
        default_factory=dict
    )  # model -> its affected columns (or read columns)
    exposures: list[str] = field(default_factory=list)
    training_columns: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    known: bool = True  # False when no lineage was available (everything is assumed affected)

    @property
    def downstream_models(self) -> list[str]:
        """Models past the staging pass-through: what a missing column would really break."""
        return sorted(m for m in self.models if not m.startswith("stg_"))

    def used(self) -> bool:
        return not self.known or bool(self.downstream_models or self.exposures or self.tests)

    def to_dict(self) -> dict:
        return {
            "models": self.models,
            "downstream_models": self.downstream_models,
            "exposures": self.exposures,
            "training_columns": self.training_columns,
            "tests": self.tests,
            "known": self.known,
        }


TRAINING_MODEL = "ratings_ml_training"


def impact_of(index: dict | None, source_name: str, table: str, columns: list[str]) -> Impact:
    """What reads these source columns, directly or through other models' columns."""
    if index is None:
        return Impact(known=False)
    source_rel = next(
        (
            rel
            for rel, entry in index["relations"].items()
            if entry["kind"] == "source" and entry["source_name"] == source_name and entry["name"] == table
        ),
        None,
    )
    if source_rel is None:
        return Impact()
    affected = {f"{source_rel}.{c.lower()}" for c in columns}
    impact = Impact()
    for rel, entry in index["relations"].items():  # built in dependency order
        if entry["kind"] != "model":
            continue
        read = sorted(r.rsplit(".", 1)[1] for r in entry["reads"] if r in affected)
        carried = sorted(col for col, ups in entry["outputs"].items() if affected.intersection(ups))
        if read or carried:
            impact.models[entry["name"]] = carried or read
            affected.update(f"{rel}.{c.lower()}" for c in carried)
            if entry["name"] == TRAINING_MODEL:
                impact.training_columns = carried
    source_uid = index["relations"][source_rel]["unique_id"]
    affected_names = {a.rsplit(".", 1)[1] for a in affected}
    touched = {
        entry["unique_id"]
        for entry in index["relations"].values()
        if entry["kind"] == "model" and entry["name"] in impact.models
    }
    for test in index["tests"]:
        attached = test.get("attached_to")
        rel = index["by_unique_id"].get(attached) if attached else None
        on_source = source_uid in test["depends_on"] and test["column"] in {c.lower() for c in columns}
        on_model = rel is not None and test["column"] is not None and f"{rel}.{test['column']}" in affected
        singular = bool(
            touched.intersection(test["depends_on"]) and affected_names.intersection(test["columns"])
        )
        if on_source or on_model or singular:
            impact.tests.append(test["name"])
    impact.exposures = sorted(e["name"] for e in index["exposures"] if touched.intersection(e["depends_on"]))
    impact.tests.sort()
    return impact
