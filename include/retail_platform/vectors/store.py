"""The vector store in PostgreSQL + pgvector: published recommender versions and the popular list.

Everything lives in the schema ``recommender`` of the database the connection ``retail_vectors``
names (``AIRFLOW_CONN_RETAIL_VECTORS``; never a sandbox fallback):

* One table per version and kind, each a partition (by ``version``) of a parent table:
  ``users_<version>`` of ``users`` (``customer_number bigint`` primary key, ``embedding
  vector(32)``): the customers the version was trained on; ``items_<version>`` of ``items``
  (``product_code text``, ``embedding``): every product; ``user_features_<version>`` of
  ``user_features`` (``feature text``, ``embedding``): the feature vectors the encoder combines
  for a customer the model never saw. A version is loaded with binary COPY into tables nobody
  reads yet, validated (row counts, dimensions, finite values; pgvector itself refuses NaN),
  indexed and attached, all in one transaction; dropping an old version is instant and leaves no
  bloat.
* ``versions``: one row per loaded version (``version``, ``loaded_at``, ``training_build``,
  ``users``, ``items``, ``encoder`` jsonb: the encoder's vocabulary rules and scalers, see
  ``retail_platform.vectors.encoder``; ``metrics`` jsonb; ``catalogue`` jsonb: each product's line
  and the products whose vectors were computed from features, see
  ``retail_platform.vectors.catalogue``).
* ``popular_builds`` / ``popular_products`` (``build_id``, ``rank``, ``product_code``, ``score``):
  the week's most popular products, the fallback list, one set of rows per warehouse build.
* ``pointer``: one row, what "current" means: ``version``, ``previous_version``,
  ``popular_build``, ``switched_at``. ``history`` records every switch.
* Views over the pointer: ``current_users``, ``current_items``, ``current_user_features``
  (``where version = (select version from pointer)``) and ``current_popular``.

A switch (publish, rollback, a new popular list) is one short transaction that updates the pointer
row, adds a ``history`` row and sends ``NOTIFY recommender_published, '<version> <popular build>'``
(delivered at commit). It changes no view and takes no lock a reader waits for. Readers see the
old state or the new one, never a mix: one SQL statement over the views is consistent by itself;
to read several things (users, items, the encoder and the popular list) read in one REPEATABLE
READ transaction, as ``load_current`` does.

Scores: inner product for users to items (pgvector's ``<#>`` is its negative), cosine distance
(``<=>``) for items to items.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import quote, urlencode

import numpy as np

from retail_platform.errors import ConfigurationError
from retail_platform.vectors import VECTORS_CONN_ID
from retail_platform.vectors.model import DIMENSIONS, ModelVersion, PopularList, PopularProduct

log = logging.getLogger(__name__)

SCHEMA = "recommender"
CHANNEL = "recommender_published"
_VERSION_NAME = re.compile(r"^[A-Za-z0-9_]{1,40}$")
# Binary COPY of (bigint, vector(32)) rows: a fixed layout numpy reads and writes in bulk.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_USER_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("id_len", ">i4"),
        ("id", ">i8"),
        ("vec_len", ">i4"),
        ("dim", ">u2"),
        ("unused", ">u2"),
        ("vec", ">f4", (DIMENSIONS,)),
    ]
)


class VectorStoreError(RuntimeError):
    pass


class VectorStoreConfigurationError(ConfigurationError):
    pass


class InvalidVersion(ValueError):
    """A version payload that must not be published (it names what is wrong)."""


@dataclass(frozen=True)
class CurrentPointer:
    version: str | None
    previous_version: str | None
    popular_build: str | None
    switched_at: datetime | None


@dataclass(frozen=True)
class VersionPayload:
    """What a version publishes: the vectors, and the encoder's feature vectors and spec."""

    version: str
    customer_numbers: np.ndarray  # int64
    user_vectors: np.ndarray  # float32 (n, 32)
    product_codes: tuple[str, ...]
    item_vectors: np.ndarray  # float32 (m, 32)
    feature_names: tuple[str, ...]
    feature_vectors: np.ndarray  # float32 (f, 32)
    encoder_spec: dict
    training_build: str
    metrics: dict
    # The catalogue: each product's line, and which products' vectors were computed from features
    # (never seen in training). Empty for versions published before the catalogue was kept.
    product_lines: dict[str, str] = field(default_factory=dict)
    from_features: tuple[str, ...] = ()

    def catalogue_doc(self) -> dict:
        return {"product_lines": self.product_lines, "from_features": sorted(self.from_features)}


@dataclass(frozen=True)
class LoadedVersion:
    version: str
    loaded_at: datetime
    training_build: str | None
    users: int
    items: int


# ---------------------------------------------------------------------------------- connections
def conninfo_from_connection(conn_id: str = VECTORS_CONN_ID, *, use_airflow: bool | None = None) -> str:
    """The libpq URI of an Airflow connection (``postgres``/``postgresql``); raises a
    ConfigurationError naming the connection when it is missing or incomplete."""
    from retail_platform.connections import ConnectionMalformed, conn_env_var, lookup_connection

    # The environment first, without Airflow (a CLI or the API starts in a fraction of the time);
    # else every backend Airflow knows.
    if os.environ.get(conn_env_var(conn_id)):
        use_airflow = False
    record = lookup_connection(conn_id, use_airflow=use_airflow)
    record.require("host", "login")
    if record.conn_type not in ("postgres", "postgresql"):
        raise ConnectionMalformed(
            f"connection {conn_id!r} ({record.origin}) is of type {record.conn_type!r}, not postgresql"
        )
    auth = quote(record.login, safe="")
    if record.password:
        auth += ":" + quote(record.password, safe="")
    port = f":{record.port}" if record.port else ""
    query = {k: v for k, v in record.extra.items() if isinstance(v, str | int)}
    return f"postgresql://{auth}@{record.host}{port}/{quote(record.schema or 'postgres', safe='')}" + (
        f"?{urlencode(query)}" if query else ""
    )


_CONFIG_SQLSTATES = {"28P01", "28000", "3D000", "42501"}  # bad password/role, no database, no privilege


@contextmanager
def connect(conninfo: str, *, autocommit: bool = False) -> Iterator:
    """A psycopg connection with pgvector's types registered; configuration errors are named."""
    import psycopg
    from pgvector.psycopg import register_vector

    try:
        conn = psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        if getattr(exc, "sqlstate", None) in _CONFIG_SQLSTATES or "password authentication" in str(exc):
            raise VectorStoreConfigurationError(
                f"connection {VECTORS_CONN_ID!r} was refused by the vector database: {_scrub(exc)}"
            ) from None
        raise
    try:
        try:
            register_vector(conn)
        except psycopg.ProgrammingError:
            conn.rollback()
            raise VectorStoreConfigurationError(
                "the vector database has no pgvector extension: run CREATE EXTENSION vector as its owner"
            ) from None
        yield conn
    finally:
        conn.close()


def _scrub(exc: Exception) -> str:
    from retail_platform.alerts import scrub

    return scrub(str(exc).strip())


def _ident(kind: str, version: str):
    from psycopg import sql

    if not _VERSION_NAME.match(version):
        raise InvalidVersion(f"version name {version!r} is not of letters, digits and underscores")
    return sql.Identifier(SCHEMA, f"{kind}_{version}")


# ---------------------------------------------------------------------------------- schema
_SCHEMA_DDL = [
    f"create schema if not exists {SCHEMA}",
    f"""create table if not exists {SCHEMA}.versions (
        version text primary key,
        loaded_at timestamptz not null default now(),
        training_build text,
        users integer not null,
        items integer not null,
        encoder jsonb not null,
        metrics jsonb not null default '{{}}'::jsonb)""",
    # Added later: stores made before it get the column on their next ensure_schema.
    f"alter table {SCHEMA}.versions add column if not exists catalogue jsonb not null default '{{}}'::jsonb",
    f"""create table if not exists {SCHEMA}.popular_builds (
        build_id text primary key,
        loaded_at timestamptz not null default now(),
        products integer not null)""",
    f"""create table if not exists {SCHEMA}.popular_products (
        build_id text not null references {SCHEMA}.popular_builds on delete cascade,
        rank integer not null,
        product_code text not null,
        score double precision not null,
        primary key (build_id, rank))""",
    f"""create table if not exists {SCHEMA}.pointer (
        singleton boolean primary key default true check (singleton),
        version text references {SCHEMA}.versions,
        previous_version text references {SCHEMA}.versions,
        popular_build text references {SCHEMA}.popular_builds,
        switched_at timestamptz)""",
    f"insert into {SCHEMA}.pointer (singleton) values (true) on conflict do nothing",
    f"""create table if not exists {SCHEMA}.history (
        id bigserial primary key,
        switched_at timestamptz not null default now(),
        action text not null,
        version text,
        previous_version text,
        popular_build text)""",
    f"""create or replace view {SCHEMA}.current_popular as
        select p.rank, p.product_code, p.score, p.build_id
        from {SCHEMA}.popular_products p join {SCHEMA}.pointer c on p.build_id = c.popular_build""",
    *(
        statement
        for kind, key, key_type in (
            ("users", "customer_number", "bigint"),
            ("items", "product_code", "text"),
            ("user_features", "feature", "text"),
        )
        for statement in (
            f"""create table if not exists {SCHEMA}.{kind} (
                version text not null, {key} {key_type} not null, embedding vector({DIMENSIONS}) not null)
                partition by list (version)""",
            # Pointer-driven: a switch changes no view, so readers never wait for one, nor deadlock.
            f"""create or replace view {SCHEMA}.current_{kind} as
                select {key}, embedding from {SCHEMA}.{kind}
                where version = (select version from {SCHEMA}.pointer)""",
        )
    ),
]
_SCHEMA_MARKER = f"{SCHEMA}.current_user_features"  # the last object the DDL creates
# The schema is current when its last object exists and the versions table has its newest column.
_SCHEMA_CURRENT = (
    "select to_regclass(%s) is not null and exists (select 1 from pg_attribute "
    f"where attrelid = to_regclass('{SCHEMA}.versions') and attname = 'catalogue' and not attisdropped)"
)
SWITCH_LOCK = f"{SCHEMA}.switch"  # serialises switches and pruning


def ensure_schema(conninfo: str) -> None:
    """Create the schema and its fixed tables when missing (idempotent; under an advisory lock; no
    DDL at all once they exist, so live readers are never locked out)."""
    with connect(conninfo) as conn, conn.transaction():
        if conn.execute(_SCHEMA_CURRENT, (_SCHEMA_MARKER,)).fetchone()[0]:
            return
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (SCHEMA,))
        for statement in _SCHEMA_DDL:
            conn.execute(statement)


# ---------------------------------------------------------------------------------- validation
def validate_payload(payload: VersionPayload) -> None:
    """Refuse a payload with wrong shapes, duplicate keys or non-finite values, naming what."""
    checks = [
        ("user vectors", payload.user_vectors, len(payload.customer_numbers)),
        ("item vectors", payload.item_vectors, len(payload.product_codes)),
        ("feature vectors", payload.feature_vectors, len(payload.feature_names)),
    ]
    for what, vectors, rows in checks:
        if vectors.ndim != 2 or vectors.shape != (rows, DIMENSIONS):
            raise InvalidVersion(
                f"version {payload.version}: {what} have shape {vectors.shape}, "
                f"expected ({rows}, {DIMENSIONS})"
            )
        if not np.isfinite(vectors).all():
            bad = int((~np.isfinite(vectors).all(axis=1)).sum())
            raise InvalidVersion(f"version {payload.version}: {bad} {what} hold NaN or infinite values")
    if len(payload.product_codes) == 0:
        raise InvalidVersion(f"version {payload.version}: no item vectors")
    if stray := set(payload.from_features) - set(payload.product_codes):
        raise InvalidVersion(f"version {payload.version}: {len(stray)} products from features have no vector")
    for what, keys in (
        ("customer numbers", payload.customer_numbers.tolist()),
        ("product codes", list(payload.product_codes)),
        ("feature names", list(payload.feature_names)),
    ):
        if len(set(keys)) != len(keys):
            raise InvalidVersion(f"version {payload.version}: duplicate {what}")


# ---------------------------------------------------------------------------------- loading
def _users_copy_bytes(customer_numbers: np.ndarray, vectors: np.ndarray) -> bytes:
    rows = np.empty(len(customer_numbers), dtype=_USER_ROW)
    rows["fields"], rows["id_len"], rows["vec_len"] = 2, 8, 4 + 4 * DIMENSIONS
    rows["id"], rows["dim"], rows["unused"] = customer_numbers, DIMENSIONS, 0
    rows["vec"] = vectors
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def _read_users_copy(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    body = data[len(_COPY_HEADER) : len(data) - len(_COPY_TRAILER)]
    rows = np.frombuffer(body, dtype=_USER_ROW)
    return rows["id"].astype(np.int64), rows["vec"].astype(np.float32)


def _create_version_tables(conn, payload: VersionPayload) -> None:
    from psycopg import sql

    v = payload.version
    for kind, key, key_type in (
        ("users", "customer_number", "bigint"),
        ("items", "product_code", "text"),
        ("user_features", "feature", "text"),
    ):
        # The partition-to-be carries its version as a constant (and a check, so attaching it scans nothing).
        conn.execute(
            sql.SQL(
                "create table {} (version text not null default {} check (version = {}), "
                "{} {} not null, embedding vector({}) not null)"
            ).format(
                _ident(kind, v),
                sql.Literal(v),
                sql.Literal(v),
                sql.Identifier(key),
                sql.SQL(key_type),
                sql.Literal(DIMENSIONS),
            )
        )


def _copy_version_rows(conn, payload: VersionPayload) -> None:
    from psycopg import sql

    v = payload.version
    with conn.cursor().copy(
        sql.SQL("copy {} (customer_number, embedding) from stdin with (format binary)").format(
            _ident("users", v)
        )
    ) as copy:
        copy.write(_users_copy_bytes(payload.customer_numbers, payload.user_vectors))
    for kind, key, names, vectors in (
        ("items", "product_code", payload.product_codes, payload.item_vectors),
        ("user_features", "feature", payload.feature_names, payload.feature_vectors),
    ):
        statement = sql.SQL("copy {} ({}, embedding) from stdin with (format binary)").format(
            _ident(kind, v), sql.Identifier(key)
        )
        with conn.cursor().copy(statement) as copy:
            copy.set_types(["text", "vector"])
            for name, vector in zip(names, vectors, strict=True):
                copy.write_row((name, vector))


def _index_and_check(conn, payload: VersionPayload) -> None:
    from psycopg import sql

    v = payload.version
    for kind, key, expected in (
        ("users", "customer_number", len(payload.customer_numbers)),
        ("items", "product_code", len(payload.product_codes)),
        ("user_features", "feature", len(payload.feature_names)),
    ):
        conn.execute(
            sql.SQL("alter table {} add primary key ({})").format(_ident(kind, v), sql.Identifier(key))
        )
        loaded = conn.execute(sql.SQL("select count(*) from {}").format(_ident(kind, v))).fetchone()[0]
        if loaded != expected:
            raise VectorStoreError(f"version {v}: {loaded} rows in {kind}_{v}, expected {expected}")
        conn.execute(sql.SQL("analyze {}").format(_ident(kind, v)))
        # SHARE UPDATE EXCLUSIVE on the parent: readers go on reading while the partition joins.
        conn.execute(
            sql.SQL("alter table {} attach partition {} for values in ({})").format(
                sql.Identifier(SCHEMA, kind), _ident(kind, v), sql.Literal(v)
            )
        )


def is_loaded(conninfo: str, version: str) -> bool:
    with connect(conninfo) as conn:
        return bool(
            conn.execute(f"select 1 from {SCHEMA}.versions where version = %s", (version,)).fetchone()
        )


def load_version(conninfo: str, payload: VersionPayload) -> bool:
    """Load a version's tables in one transaction (invisible until a switch); False if already loaded."""
    validate_payload(payload)
    ensure_schema(conninfo)
    with connect(conninfo) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"{SCHEMA}.{payload.version}",))
        if conn.execute(f"select 1 from {SCHEMA}.versions where version = %s", (payload.version,)).fetchone():
            return False
        _create_version_tables(conn, payload)
        _copy_version_rows(conn, payload)
        _index_and_check(conn, payload)
        conn.execute(
            f"insert into {SCHEMA}.versions "
            "(version, training_build, users, items, encoder, metrics, catalogue) "
            "values (%s, %s, %s, %s, %s, %s, %s)",
            (
                payload.version,
                payload.training_build,
                len(payload.customer_numbers),
                len(payload.product_codes),
                json.dumps(payload.encoder_spec),
                json.dumps(payload.metrics, default=str),
                json.dumps(payload.catalogue_doc()),
            ),
        )
    return True


def load_popular(conn, popular: PopularList) -> None:
    """Insert a popular list (within the caller's transaction) unless that build is there already."""
    if not popular.products:
        raise InvalidVersion(f"popular list of build {popular.build_id} is empty")
    inserted = conn.execute(
        f"insert into {SCHEMA}.popular_builds (build_id, products) values (%s, %s) on conflict do nothing",
        (popular.build_id, len(popular.products)),
    ).rowcount
    if inserted:
        with conn.cursor() as cur:
            cur.executemany(
                f"insert into {SCHEMA}.popular_products (build_id, rank, product_code, score) "
                "values (%s, %s, %s, %s)",
                [(popular.build_id, p.rank, p.product_code, float(p.score)) for p in popular.products],
            )


# ---------------------------------------------------------------------------------- switching
def _switch(
    conninfo: str, *, action: str, version: str | None = None, popular: PopularList | None = None
) -> CurrentPointer:
    """One short transaction: the pointer row (the views follow it), history, NOTIFY. No DDL: readers
    are never blocked, and each statement or REPEATABLE READ transaction sees one pointer state."""
    with connect(conninfo) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (SWITCH_LOCK,))
        return _switch_in(conn, action=action, version=version, popular=popular)


def _switch_in(conn, *, action: str, version: str | None, popular: PopularList | None) -> CurrentPointer:
    current = conn.execute(
        f"select version, previous_version, popular_build from {SCHEMA}.pointer for update"
    ).fetchone()
    new_version, previous, popular_build = current
    if popular is not None:
        load_popular(conn, popular)
        popular_build = popular.build_id
    if version is not None and version != new_version:
        if not conn.execute(f"select 1 from {SCHEMA}.versions where version = %s", (version,)).fetchone():
            raise VectorStoreError(f"version {version} is not loaded in the vector database")
        new_version, previous = version, new_version
    row = conn.execute(
        f"update {SCHEMA}.pointer set version = %s, previous_version = %s, popular_build = %s, "
        "switched_at = now() returning switched_at",
        (new_version, previous, popular_build),
    ).fetchone()
    conn.execute(
        f"insert into {SCHEMA}.history (action, version, previous_version, popular_build) "
        "values (%s, %s, %s, %s)",
        (action, new_version, previous, popular_build),
    )
    conn.execute("select pg_notify(%s, %s)", (CHANNEL, f"{new_version or ''} {popular_build or ''}"))
    return CurrentPointer(new_version, previous, popular_build, row[0])


def publish(conninfo: str, payload: VersionPayload, popular: PopularList | None = None) -> CurrentPointer:
    """Load the version (if not yet) and make it current, with the popular list when given."""
    load_version(conninfo, payload)
    return _switch(conninfo, action="publish", version=payload.version, popular=popular)


def publish_popular(conninfo: str, popular: PopularList) -> CurrentPointer:
    """Make a popular list current on its own (before any model exists, or when the gate refused one)."""
    ensure_schema(conninfo)
    return _switch(conninfo, action="popular", popular=popular)


def switch_to(conninfo: str, version: str, *, action: str = "publish") -> CurrentPointer:
    """Make an already loaded version current."""
    ensure_schema(conninfo)
    return _switch(conninfo, action=action, version=version)


def rollback(conninfo: str, to: str | None = None) -> CurrentPointer:
    """Switch back to the previous version (or ``to``), without retraining."""
    pointer = current_pointer(conninfo)
    target = to or (pointer.previous_version if pointer else None)
    if target is None:
        raise VectorStoreError("no previous version to roll back to")
    if pointer and target == pointer.version:
        raise VectorStoreError(f"version {target} is already current")
    return _switch(conninfo, action="rollback", version=target)


# ---------------------------------------------------------------------------------- reading
def current_pointer(conninfo: str) -> CurrentPointer | None:
    """What is current (cheap: one row; for polling). None before the schema exists."""
    import psycopg

    with connect(conninfo, autocommit=True) as conn:
        try:
            row = conn.execute(
                f"select version, previous_version, popular_build, switched_at from {SCHEMA}.pointer"
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return CurrentPointer(*row) if row else None


def load_current(conninfo: str) -> tuple[ModelVersion | None, PopularList | None]:
    """The current version (with its encoder) and the popular list, read in one REPEATABLE READ
    transaction: both belong to the same pointer state."""
    import psycopg

    for attempt in (1, 2):
        with connect(conninfo) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            try:
                return _read_current(conn)
            except psycopg.errors.UndefinedTable:
                # The schema is not there yet, or two switches and a prune passed since our pointer read.
                conn.rollback()
                if attempt == 2 or current_pointer(conninfo) is None:
                    return None, None
    return None, None


def _read_current(conn) -> tuple[ModelVersion | None, PopularList | None]:
    row = conn.execute(f"select version, popular_build from {SCHEMA}.pointer").fetchone()
    version, popular_build = row if row else (None, None)
    popular = _read_popular(conn, popular_build) if popular_build else None
    model = _read_version(conn, version) if version else None
    conn.rollback()
    return model, popular


def _read_popular(conn, build_id: str) -> PopularList:
    rows = conn.execute(
        f"select rank, product_code, score from {SCHEMA}.popular_products where build_id = %s order by rank",
        (build_id,),
    ).fetchall()
    return PopularList(build_id, tuple(PopularProduct(int(r), c, float(s)) for r, c, s in rows))


def _read_keyed(conn, kind: str, key: str, version: str) -> tuple[tuple[str, ...], np.ndarray]:
    from psycopg import sql

    rows = conn.execute(
        sql.SQL("select {}, embedding from {} order by {}").format(
            sql.Identifier(key), _ident(kind, version), sql.Identifier(key)
        ),
        binary=True,
    ).fetchall()
    names = tuple(r[0] for r in rows)
    vectors = np.array([r[1].to_numpy() for r in rows], dtype=np.float32).reshape(len(rows), DIMENSIONS)
    return names, vectors


def _read_version(conn, version: str) -> ModelVersion:
    from psycopg import sql

    from retail_platform.vectors.encoder import FeatureEncoder

    spec, catalogue = conn.execute(
        f"select encoder, catalogue from {SCHEMA}.versions where version = %s", (version,)
    ).fetchone()
    buffer = bytearray()
    statement = sql.SQL(
        "copy (select customer_number, embedding from {} order by customer_number) to stdout (format binary)"
    ).format(_ident("users", version))
    with conn.cursor().copy(statement) as copy:
        for chunk in copy:
            buffer += chunk
    customers, user_vectors = _read_users_copy(bytes(buffer))
    codes, item_vectors = _read_keyed(conn, "items", "product_code", version)
    names, feature_vectors = _read_keyed(conn, "user_features", "feature", version)
    return ModelVersion(
        version=version,
        customer_numbers=customers,
        user_vectors=user_vectors,
        product_codes=codes,
        item_vectors=item_vectors,
        encoder=FeatureEncoder(spec, names, feature_vectors),
        product_lines=dict(catalogue.get("product_lines") or {}),
        from_features=frozenset(catalogue.get("from_features") or ()),
    )


def lookup_user(conninfo: str, customer_number: int) -> np.ndarray | None:
    """The current version's vector of a known customer, or None."""
    with connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            f"select embedding from {SCHEMA}.current_users where customer_number = %s",
            (int(customer_number),),
            binary=True,
        ).fetchone()
    return row[0].to_numpy().astype(np.float32) if row else None


def top_items(conn, user_vector: np.ndarray, k: int = 10) -> list[tuple[str, float]]:
    """Exact top-k products by inner product in the current version (one statement: consistent)."""
    rows = conn.execute(
        f"select product_code, -(embedding <#> %s) as score from {SCHEMA}.current_items "
        "order by embedding <#> %s limit %s",
        (user_vector, user_vector, k),
    ).fetchall()
    return [(code, float(score)) for code, score in rows]


def similar_items(conn, product_code: str, k: int = 10) -> list[tuple[str, float]]:
    """The k products nearest by cosine distance to one product of the current version."""
    rows = conn.execute(
        f"with q as (select embedding from {SCHEMA}.current_items where product_code = %s) "
        f"select i.product_code, i.embedding <=> q.embedding as distance from {SCHEMA}.current_items i, q "
        "where i.product_code <> %s order by i.embedding <=> q.embedding limit %s",
        (product_code, product_code, k),
    ).fetchall()
    return [(code, float(distance)) for code, distance in rows]


# ---------------------------------------------------------------------------------- housekeeping
def loaded_versions(conninfo: str) -> list[LoadedVersion]:
    import psycopg

    with connect(conninfo, autocommit=True) as conn:
        try:
            rows = conn.execute(
                f"select version, loaded_at, training_build, users, items from {SCHEMA}.versions "
                "order by loaded_at"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []
    return [LoadedVersion(*row) for row in rows]


def prune(conninfo: str, retention: timedelta, now: datetime | None = None) -> list[str]:
    """Drop versions loaded before the retention window, never the current or previous one.

    Under the switch lock (no switch meanwhile); each partition is detached CONCURRENTLY (readers
    of the views are not blocked) and then dropped."""
    dropped = []
    with connect(conninfo, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(hashtext(%s))", (SWITCH_LOCK,))
        try:
            pointer = conn.execute(
                f"select version, previous_version, popular_build from {SCHEMA}.pointer"
            ).fetchone()
            cutoff = conn.execute(
                "select coalesce(%s::timestamptz, now()) - %s", (now, retention)
            ).fetchone()[0]
            doomed = [
                version
                for (version,) in conn.execute(
                    f"select version from {SCHEMA}.versions where loaded_at < %s order by loaded_at",
                    (cutoff,),
                ).fetchall()
                if version not in (pointer[0], pointer[1])
            ]
            for version in doomed:
                conn.execute(
                    f"delete from {SCHEMA}.versions where version = %s", (version,)
                )  # no switch to it
                _drop_version_tables(conn, version)
                dropped.append(version)
            conn.execute(
                f"delete from {SCHEMA}.popular_builds where loaded_at < %s and build_id is distinct from %s",
                (cutoff, pointer[2]),
            )
        finally:
            conn.execute("select pg_advisory_unlock(hashtext(%s))", (SWITCH_LOCK,))
    return dropped


def _drop_version_tables(conn, version: str) -> None:
    from psycopg import sql

    for kind in ("users", "items", "user_features"):
        table = _ident(kind, version)
        attached = conn.execute(
            "select 1 from pg_inherits where inhrelid = to_regclass(%s)", (f"{SCHEMA}.{kind}_{version}",)
        ).fetchone()
        if attached:
            conn.execute(
                sql.SQL("alter table {} detach partition {} concurrently").format(
                    sql.Identifier(SCHEMA, kind), table
                )
            )
        conn.execute(sql.SQL("drop table if exists {}").format(table))
