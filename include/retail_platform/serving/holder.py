"""The version a serving process answers from, kept current without restarts.

The vector store (PostgreSQL + pgvector, the store of record) is read whole into memory: one
consistent read of the current version and its popular list. A watcher thread LISTENs for the
store's ``recommender_published`` notification and also polls the cheap current pointer (a missed
notification, a dropped connection), and swaps in a new snapshot between requests. All of it goes
through a circuit breaker: with the store down, the process keeps answering from what it holds,
stops waiting on the store, and probes it every few seconds until a reload succeeds.

The popular list also has a last-resort copy on disk, rewritten on every reload, so a process that
starts while the store is down still answers (with the fallback).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from retail_platform.connections import ConnectionRecord, conn_env_var, lookup_connection, parse_connection
from retail_platform.errors import ConfigurationError
from retail_platform.serving.breaker import CircuitBreaker, CircuitOpen
from retail_platform.serving.search import ServingSnapshot
from retail_platform.vectors import VECTORS_CONN_ID
from retail_platform.vectors.model import PopularList, PopularProduct

log = logging.getLogger(__name__)
NOTIFY_CHANNEL = "recommender_published"
CONNECT_TIMEOUT_S = 2  # libpq's shortest


def service_connection(conn_id: str) -> ConnectionRecord:
    """A connection for a serving process: from its environment variable when set (no Airflow import,
    which costs seconds at start-up), else through Airflow's lookup (metadata database, secrets
    backends such as AWS Secrets Manager). Missing: ConnectionNotConfigured naming it."""
    raw = os.environ.get(conn_env_var(conn_id))
    if raw:
        return parse_connection(conn_id, raw)
    return lookup_connection(conn_id)


def vectors_conninfo() -> str:
    import psycopg.conninfo

    record = service_connection(VECTORS_CONN_ID)
    record.require("host", "schema")
    return psycopg.conninfo.make_conninfo(
        host=record.host,
        port=record.port or 5432,
        user=record.login or "",
        password=record.password or "",
        dbname=record.schema,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name="retail-serving",
    )


class VectorStoreClient:
    """The three reads the serving side makes of the store (functions of the recommender room's
    ``retail_platform.vectors.store``), and a LISTEN connection."""

    def __init__(self, conninfo: str):
        self.conninfo = conninfo

    def current_pointer(self):
        from retail_platform.vectors import store

        return store.current_pointer(self.conninfo)

    def load_current(self):
        from retail_platform.vectors import store

        return store.load_current(self.conninfo)

    def listen(self) -> Listener:
        return Listener.connect(self.conninfo)


class Listener:
    def __init__(self, conn):
        self.conn = conn

    @classmethod
    def connect(cls, conninfo: str) -> Listener:
        import psycopg

        conn = psycopg.connect(conninfo, autocommit=True)
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return cls(conn)

    def wait(self, timeout: float) -> bool:
        """True when a publish was announced within ``timeout`` seconds."""
        return any(True for _ in self.conn.notifies(timeout=timeout, stop_after=1))

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection: nothing left to do
            self.conn.close()


# ---------------------------------------------------------------------- the disk copy
def save_popular(path: Path, popular: PopularList) -> None:
    doc = {
        "build_id": popular.build_id,
        "saved_at": datetime.now(UTC).isoformat(),
        "products": [
            {"rank": p.rank, "product_code": p.product_code, "score": p.score} for p in popular.products
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def read_popular(path: Path) -> PopularList | None:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("the popular list's disk copy %s is unreadable: %s", path, exc)
        return None
    products = tuple(
        PopularProduct(int(p["rank"]), str(p["product_code"]), float(p["score"])) for p in doc["products"]
    )
    return PopularList(str(doc["build_id"]), products)


# ---------------------------------------------------------------------- the holder
@dataclass
class HolderStatus:
    last_reload_at: datetime | None = None
    last_error: str | None = None
    reloads: int = 0


class ModelHolder:
    """Holds the current snapshot; ``snapshot`` is read once per request."""

    def __init__(
        self, client: VectorStoreClient | None, breaker: CircuitBreaker, popular_cache: Path, poll_s: float
    ):
        self.client = client
        self.breaker = breaker
        self.popular_cache = popular_cache
        self.poll_s = poll_s
        self.snapshot = ServingSnapshot.build(None, None)
        self.status = HolderStatus()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_swap: list[Callable[[ServingSnapshot], None]] = []

    def start(self, watch: bool = True) -> ModelHolder:
        """Cold start: the store's current version, else the popular list's disk copy."""
        try:
            self.refresh()
        except ConfigurationError:
            raise
        except Exception as exc:
            self.status.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("vector store unavailable at start (%s): answering from the popular list's copy", exc)
        if self.snapshot.popular is None:
            cached = read_popular(self.popular_cache)
            if cached is not None:
                self._swap(ServingSnapshot.build(self.snapshot.model, cached, self.snapshot.pointer))
        if watch and self.client is not None:
            self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def refresh(self) -> bool:
        """Load the current version when the store's pointer moved; True when the snapshot changed."""
        if self.client is None:
            return False
        pointer = self.breaker.call(self.client.current_pointer)
        if pointer == self.snapshot.pointer and self.snapshot.pointer is not None:
            return False
        model, popular = self.breaker.call(self.client.load_current)
        if popular is not None:
            try:
                save_popular(self.popular_cache, popular)
            except OSError as exc:
                log.warning("could not keep the popular list's copy in %s: %s", self.popular_cache, exc)
        self._swap(ServingSnapshot.build(model, popular or self.snapshot.popular, pointer))
        self.status.last_reload_at, self.status.last_error = datetime.now(UTC), None
        self.status.reloads += 1
        log.info(
            "serving model %s, popular list %s", self.snapshot.model_version, self.snapshot.popular_build
        )
        return True

    def _swap(self, snapshot: ServingSnapshot) -> None:
        self.snapshot = snapshot  # one reference assignment: requests in flight keep the old one
        for callback in self.on_swap:
            callback(snapshot)

    def _watch(self) -> None:
        listener: Listener | None = None
        while not self._stop.is_set():
            try:
                if listener is None and self.breaker.allows():
                    listener = self.breaker.call(self.client.listen)
                    self.refresh()  # catch up with whatever was published while nobody listened
                    continue
                if listener is not None:
                    listener.wait(self.poll_s)
                else:
                    self._stop.wait(min(self.poll_s, max(self.breaker.reset_s / 5, 0.2)))
                if not self._stop.is_set():
                    self.refresh()
            except CircuitOpen:
                continue
            except Exception as exc:  # an outage: keep serving what is held, retry through the breaker
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("vector store: %s", self.status.last_error)
                if listener is not None:
                    listener.close()
                    listener = None
                self._stop.wait(0.2)
        if listener is not None:
            listener.close()
