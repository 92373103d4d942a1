"""The vector store against the sandbox's real PostgreSQL + pgvector: publishing, the atomic switch,
readers during publishes and rollbacks, a killed publish, NOTIFY, pruning, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from retail_platform.vectors import store
from retail_platform.vectors.model import DIMENSIONS, PopularList, PopularProduct, UserFeatures

USERS, ITEMS = 20_000, 300


def payload(version: str, number: float, users: int = USERS) -> store.VersionPayload:
    """A version whose every vector holds ``number``: a reader can tell versions apart, and a mix."""
    return store.VersionPayload(
        version=version,
        customer_numbers=np.arange(1, users + 1, dtype=np.int64),
        user_vectors=np.full((users, DIMENSIONS), number, np.float32),
        product_codes=tuple(f"{version}_P{i:04d}" for i in range(ITEMS)),
        item_vectors=np.full((ITEMS, DIMENSIONS), number, np.float32)
        + np.arange(ITEMS, dtype=np.float32)[:, None],
        feature_names=("country=usa", "credit=q1"),
        feature_vectors=np.full((2, DIMENSIONS), number, np.float32),
        encoder_spec={"credit_limit_edges": [1000.0], "weights": "mean"},
        training_build=f"build-{version}",
        metrics={"number": number},
    )


def popular(build: str) -> PopularList:
    return PopularList(build, tuple(PopularProduct(r, f"{build}_P{r:04d}", 100.0 - r) for r in range(1, 6)))


@pytest.fixture
def conninfo(vector_db):
    """A clean ``recommender`` schema in the sandbox PostgreSQL for each test."""
    url = vector_db.url()
    with store.connect(url, autocommit=True) as conn:
        conn.execute(f"drop schema if exists {store.SCHEMA} cascade")
    return url


def test_sandbox_postgres_serves_pgvector_with_a_password(vector_db, conninfo):
    assert vector_db.connection_env() == {"AIRFLOW_CONN_RETAIL_VECTORS": conninfo}
    assert os.environ["AIRFLOW_CONN_RETAIL_VECTORS"] == conninfo
    assert store.conninfo_from_connection().startswith("postgresql://retail_vectors:")
    with store.connect(conninfo, autocommit=True) as conn:
        assert (
            conn.execute("select extversion from pg_extension where extname = 'vector'").fetchone()[0]
            >= "0.8"
        )
        assert conn.execute("show listen_addresses").fetchone()[0] == "127.0.0.1"
    wrong = conninfo.replace("retail_vectors:", "retail_vectors:wrong", 1)
    with pytest.raises(store.VectorStoreConfigurationError, match="retail_vectors"), store.connect(wrong):
        pass


def test_a_missing_connection_is_named(monkeypatch):
    from retail_platform.connections import ConnectionNotConfigured

    monkeypatch.delenv("AIRFLOW_CONN_RETAIL_VECTORS", raising=False)
    with pytest.raises(ConnectionNotConfigured, match="connection 'retail_vectors' is not configured"):
        store.conninfo_from_connection(use_airflow=False)


def test_publish_load_lookup_and_queries(conninfo):
    assert store.load_current(conninfo) == (None, None)
    pointer = store.publish(conninfo, payload("v1", 1.0), popular("b1"))
    assert (pointer.version, pointer.previous_version, pointer.popular_build) == ("v1", None, "b1")
    model, fallback = store.load_current(conninfo)
    assert model.version == "v1" and model.user_vectors.shape == (USERS, DIMENSIONS)
    assert np.array_equal(model.customer_numbers, np.arange(1, USERS + 1))
    assert [p.product_code for p in fallback.products][:2] == ["b1_P0001", "b1_P0002"]
    assert np.array_equal(store.lookup_user(conninfo, 7), model.user_vector(7))
    assert store.lookup_user(conninfo, 10**9) is None
    embedded = model.encoder.embed(UserFeatures(None, None, None, "USA", 10.0))
    assert embedded[-1] == 1.0 and np.allclose(embedded[:-1], 1.0)
    with store.connect(conninfo, autocommit=True) as conn:
        top = store.top_items(conn, np.ones(DIMENSIONS, np.float32), k=3)
        assert [code for code, _ in top] == ["v1_P0299", "v1_P0298", "v1_P0297"]  # the largest inner products
        assert top[0][1] == pytest.approx(DIMENSIONS * 300.0)
        assert len(store.similar_items(conn, "v1_P0010", k=5)) == 5
    assert store.publish(conninfo, payload("v1", 1.0)).version == "v1"  # idempotent: loaded once


def test_invalid_vectors_are_refused_and_nothing_is_loaded(conninfo):
    bad = payload("vbad", 1.0)
    bad.user_vectors[5, 3] = np.nan
    with pytest.raises(store.InvalidVersion, match="version vbad: 1 user vectors hold NaN"):
        store.publish(conninfo, bad)
    short = payload("vshort", 1.0)
    object.__setattr__(short, "item_vectors", short.item_vectors[:, :31])
    with pytest.raises(store.InvalidVersion, match="item vectors have shape"):
        store.publish(conninfo, short)
    assert store.loaded_versions(conninfo) == [] and store.current_pointer(conninfo) is None


def _reader(conninfo: str, stop: threading.Event, seen: list, errors: list) -> None:
    """Reads like the serving side in a loop, checking every read is whole and of one version."""
    numbers = {"v1": 1.0, "v2": 2.0, "v3": 3.0}
    while not stop.is_set():
        try:
            model, fallback = store.load_current(conninfo)
            if model is None or fallback is None or len(model.product_codes) != ITEMS:
                errors.append(f"empty or partial read: {model and model.version}")
                continue
            n = numbers[model.version]
            arrays = (
                model.user_vectors,
                model.item_vectors[:, :1] - np.arange(ITEMS)[:, None],
                model.encoder.feature_vectors,
            )
            if not all(np.all(a == n) for a in arrays) or not model.product_codes[0].startswith(
                model.version
            ):
                errors.append(f"a mix of versions under {model.version}")
            with store.connect(conninfo, autocommit=True) as conn:
                codes = {
                    c.split("_")[0] for c, _ in store.top_items(conn, np.ones(DIMENSIONS, np.float32), k=10)
                }
            if len(codes) != 1:
                errors.append(f"one statement over the views saw {codes}")
            seen.append(model.version)
        except Exception as exc:
            errors.append(repr(exc))


def _view_reader(conninfo: str, stop: threading.Event, seen: list, errors: list) -> None:
    """One statement over the views, as fast as it goes: a switch must never show a missing view."""
    with store.connect(conninfo, autocommit=True) as conn:
        while not stop.is_set():
            try:
                rows = conn.execute(
                    f"select i.product_code, u.embedding = i.embedding from {store.SCHEMA}.current_items i "
                    f"join {store.SCHEMA}.current_users u on u.customer_number = 1 "
                    "where i.product_code like '%%_P0000'"
                ).fetchall()
                if len(rows) != 1 or not rows[0][1]:
                    errors.append(f"views of different versions or none: {rows}")
                seen.append(rows[0][0].split("_")[0] if rows else None)
            except Exception as exc:
                errors.append(repr(exc))


def test_readers_in_a_loop_never_see_a_mix_or_nothing_during_publishes_and_rollbacks(conninfo):
    store.publish(conninfo, payload("v1", 1.0), popular("b1"))
    stop, seen, errors = threading.Event(), [], []
    readers = [
        threading.Thread(target=target, args=(conninfo, stop, seen, errors))
        for target in (_reader, _view_reader, _view_reader)
    ]
    for reader in readers:
        reader.start()
    try:
        time.sleep(0.3)
        switches = [
            lambda: store.publish(conninfo, payload("v2", 2.0), popular("b2")),
            lambda: store.rollback(conninfo),
            lambda: store.publish(conninfo, payload("v3", 3.0)),
            lambda: store.rollback(conninfo, to="v2"),
            lambda: store.switch_to(conninfo, "v3"),
        ] + [lambda v=v: store.switch_to(conninfo, v) for v in ("v1", "v2", "v3") * 4]
        durations = []
        for switch in switches:
            started = time.perf_counter()
            switch()
            durations.append(time.perf_counter() - started)
            time.sleep(0.1)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert errors == []
    assert {"v1", "v2", "v3"} <= set(seen), "the readers saw every version"
    assert store.current_pointer(conninfo).version == "v3"
    assert durations[1] < 2 and durations[4] < 2, "a rollback is a switch, not a load"


KILLED_PUBLISH = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_vectors import payload
    from retail_platform.vectors import store

    def stall(conn, version):  # the rows are copied, the transaction is open: signal and wait
        Path({flag!r}).write_text("loading")
        time.sleep(60)

    store._index_and_check = stall
    store.publish({conninfo!r}, payload("v2", 2.0))
    """
)


def test_a_kill_during_publish_leaves_the_current_version_serving(conninfo, tmp_path):
    store.publish(conninfo, payload("v1", 1.0), popular("b1"))
    flag = tmp_path / "loading"
    script = KILLED_PUBLISH.format(tests=str(os.path.dirname(__file__)), flag=str(flag), conninfo=conninfo)
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert process.poll() is None, "the publishing process died before loading"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    model, fallback = store.load_current(conninfo)
    assert (model.version, fallback.build_id) == ("v1", "b1")
    assert [v.version for v in store.loaded_versions(conninfo)] == ["v1"]
    with store.connect(conninfo, autocommit=True) as conn:  # the half-loaded tables rolled back
        assert conn.execute("select to_regclass('recommender.users_v2')").fetchone()[0] is None
    assert store.publish(conninfo, payload("v2", 2.0)).version == "v2", "the rerun publishes"


def test_every_switch_is_announced_with_notify(conninfo):
    """A serving process reloads on the NOTIFY of any switch: publish, a popular list alone, a
    rollback and a switch to a loaded version. Each is heard once, naming the state it made."""
    import psycopg

    store.ensure_schema(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute(f"listen {store.CHANNEL}")
        store.publish(conninfo, payload("v1", 1.0, users=100), popular("b1"))
        store.publish(conninfo, payload("v2", 2.0, users=100))
        store.publish_popular(conninfo, popular("b2"))
        store.rollback(conninfo)
        store.switch_to(conninfo, "v2")
        notes = [n.payload for n in listener.notifies(timeout=5, stop_after=5)]
        extra = [n.payload for n in listener.notifies(timeout=0.5, stop_after=1)]
    assert notes == ["v1 b1", "v2 b1", "v2 b2", "v1 b2", "v2 b2"] and extra == []


def test_prune_drops_old_versions_but_never_current_or_previous(conninfo):
    for i, version in enumerate(("v1", "v2", "v3", "v4"), start=1):
        store.publish(conninfo, payload(version, float(i), users=100), popular(f"b{i}"))
    store.rollback(conninfo)  # current v3, previous v4
    later = datetime.now(UTC) + timedelta(days=30)
    assert store.prune(conninfo, timedelta(days=365), now=later) == []
    assert sorted(store.prune(conninfo, timedelta(days=7), now=later)) == ["v1", "v2"]
    pointer = store.current_pointer(conninfo)
    assert (pointer.version, pointer.previous_version) == ("v3", "v4")
    assert [v.version for v in store.loaded_versions(conninfo)] == ["v3", "v4"]
    with store.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("select to_regclass('recommender.items_v1')").fetchone()[0] is None
        builds = {b for (b,) in conn.execute("select build_id from recommender.popular_builds")}
    assert builds == {"b4"}, "only the current popular list outlives the window"
    assert store.load_current(conninfo)[0].version == "v3"
