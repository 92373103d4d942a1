"""Connections, looked up the way Airflow looks them up, or from the environment.

Inside Airflow (a task, the DAG processor, the Airflow CLI) the lookup is Airflow's own: environment
variables (``AIRFLOW_CONN_<ID>``, URI or JSON), the metadata database (from a task) and any
configured secrets backend (AWS Secrets Manager, Vault, ...). A process that does not run Airflow
(the recommendation API, the stream consumer, a Lambda) reads the environment only.

A connection that is missing or malformed is a configuration error naming the connection id and
where it was looked for: nothing falls back to a sandbox server.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from retail_platform.errors import ConfigurationError


class ConnectionNotConfigured(ConfigurationError):
    pass


class ConnectionMalformed(ConfigurationError):
    pass


def conn_env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


@dataclass(frozen=True)
class ConnectionRecord:
    """What a connection lookup found; ``origin`` says where (for error messages, never secrets)."""

    conn_id: str
    conn_type: str
    host: str | None
    port: int | None
    login: str | None
    password: str | None = field(repr=False)
    schema: str | None
    extra: dict = field(default_factory=dict, repr=False)
    origin: str = ""

    def require(self, *names: str) -> None:
        missing = [name for name in names if not getattr(self, name)]
        if missing:
            raise ConnectionMalformed(
                f"connection {self.conn_id!r} ({self.origin}) has no {', '.join(missing)}"
            )


def _where(conn_id: str, airflow: bool) -> str:
    env = f"environment variable {conn_env_var(conn_id)}"
    if airflow:
        return f"Airflow's connections ({env}, the metadata database, configured secrets backends)"
    return env


def _airflow_available() -> bool:
    try:
        import airflow.sdk  # noqa: F401
    except ImportError:
        return False
    return True


def lookup_connection(conn_id: str, *, use_airflow: bool | None = None) -> ConnectionRecord:
    """The connection ``conn_id``; raises ConnectionNotConfigured or ConnectionMalformed.

    ``use_airflow``: None looks through Airflow when it is installed, else the environment."""
    airflow = _airflow_available() if use_airflow is None else use_airflow
    if airflow:
        return _from_airflow(conn_id)
    raw = os.environ.get(conn_env_var(conn_id))
    if not raw:
        raise ConnectionNotConfigured(
            f"connection {conn_id!r} is not configured: looked in {_where(conn_id, False)}"
        )
    return parse_connection(conn_id, raw, origin=f"environment variable {conn_env_var(conn_id)}")


def _from_airflow(conn_id: str) -> ConnectionRecord:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    origin = (
        f"environment variable {conn_env_var(conn_id)}"
        if os.environ.get(conn_env_var(conn_id))
        else "Airflow's connections"
    )
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raw = os.environ.get(conn_env_var(conn_id))
        if raw:  # Airflow skips a variable it cannot parse and says "not defined": say why instead
            parse_connection(conn_id, raw, origin=origin)
            raise ConnectionMalformed(
                f"connection {conn_id!r} ({origin}) could not be read by Airflow"
            ) from None
        raise ConnectionNotConfigured(
            f"connection {conn_id!r} is not configured: looked in {_where(conn_id, True)}"
        ) from None
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        # e.g. "Port could not be cast to integer value as '33o6'": the URI, not the source, is wrong.
        raise ConnectionMalformed(f"connection {conn_id!r} ({origin}) is malformed: {exc}") from None
    try:
        port = int(conn.port) if conn.port not in (None, "") else None
        extra = conn.extra_dejson if conn.extra else {}
    except (ValueError, TypeError) as exc:
        raise ConnectionMalformed(f"connection {conn_id!r} ({origin}) is malformed: {exc}") from None
    return ConnectionRecord(
        conn_id=conn_id,
        conn_type=conn.conn_type or "",
        host=conn.host or None,
        port=port,
        login=conn.login or None,
        password=conn.password,
        schema=conn.schema or None,
        extra=extra,
        origin=origin,
    )


def parse_connection(conn_id: str, raw: str, *, origin: str = "") -> ConnectionRecord:
    """An Airflow connection in URI or JSON form, parsed as Airflow parses it."""
    raw = raw.strip()
    origin = origin or f"environment variable {conn_env_var(conn_id)}"
    try:
        if raw.startswith("{"):
            doc = json.loads(raw)
            extra = doc.get("extra") or {}
            if isinstance(extra, str):
                extra = json.loads(extra) if extra else {}
            port = doc.get("port")
            return ConnectionRecord(
                conn_id=conn_id,
                conn_type=doc.get("conn_type") or "",
                host=doc.get("host") or None,
                port=int(port) if port not in (None, "") else None,
                login=doc.get("login") or None,
                password=doc.get("password"),
                schema=doc.get("schema") or None,
                extra=extra,
                origin=origin,
            )
        parts = urlsplit(raw)
        extra = dict(parse_qsl(parts.query))
        if "__extra__" in extra:
            extra = json.loads(extra["__extra__"])
        return ConnectionRecord(
            conn_id=conn_id,
            conn_type=parts.scheme.replace("-", "_"),
            host=unquote(parts.hostname or "") or None,
            port=parts.port,
            login=unquote(parts.username or "") or None,
            password=unquote(parts.password) if parts.password is not None else None,
            schema=unquote(parts.path.lstrip("/")) or None,
            extra=extra,
            origin=origin,
        )
    except (ValueError, TypeError) as exc:
        raise ConnectionMalformed(f"connection {conn_id!r} ({origin}) is malformed: {exc}") from None
