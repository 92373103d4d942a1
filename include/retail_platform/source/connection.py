"""MySQL/MariaDB connection details, from Airflow connections in the environment.

An Airflow connection may be given as a URI (``mysql://user:pass@host:3306/db``) or
as JSON (``{"conn_type": "mysql", "host": ..., "login": ..., ...}``). Without one,
the platform's private MariaDB instance provides both roles.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from retail_platform.settings import Settings, conn_env_var


@dataclass(frozen=True)
class MySQLConnectionInfo:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str
    unix_socket: str | None = None
    conn_id: str = ""

    def url(self) -> str:
        """``mysql://`` URL with percent-encoded credentials: an Airflow connection URI, and what
        connectorx reads from (TCP)."""
        return (
            f"mysql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(self.database, safe='')}"
        )

    def mysqlclient_kwargs(self, **extra) -> dict:
        kwargs = dict(
            host=self.host, port=self.port, user=self.user, password=self.password, database=self.database
        )
        if self.unix_socket:
            kwargs["unix_socket"] = self.unix_socket
        kwargs.update(extra)
        return kwargs

    def describe(self) -> str:
        """Where it points, without the password: safe for logs."""
        return f"{self.user}@{self.host}:{self.port}/{self.database}"

    def with_database(self, database: str) -> MySQLConnectionInfo:
        return MySQLConnectionInfo(
            self.host, self.port, self.user, self.password, database, self.unix_socket, self.conn_id
        )


class ConnectionConfigError(ValueError):
    pass


def parse_airflow_connection(conn_id: str, raw: str) -> MySQLConnectionInfo:
    """Parse an AIRFLOW_CONN_* value (URI or JSON) for a MySQL connection."""
    raw = raw.strip()
    env_name = conn_env_var(conn_id)
    if raw.startswith("{"):
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConnectionConfigError(f"{env_name}: invalid JSON ({exc.msg})") from None
        conn_type = doc.get("conn_type", "mysql")
        extra = doc.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra) if extra else {}
        host, port = doc.get("host"), doc.get("port") or 3306
        user, password, database = doc.get("login"), doc.get("password") or "", doc.get("schema")
    else:
        parts = urlsplit(raw)
        conn_type = parts.scheme
        host, user = parts.hostname, unquote(parts.username or "")
        password = unquote(parts.password or "")
        port = parts.port or 3306
        database = unquote(parts.path.lstrip("/"))
        extra = dict(parse_qsl(parts.query))
    if conn_type not in ("mysql", "mariadb"):
        raise ConnectionConfigError(f"{env_name}: conn_type must be mysql, got {conn_type!r}")
    missing = [name for name, value in (("host", host), ("login", user), ("schema", database)) if not value]
    if missing:
        raise ConnectionConfigError(f"{env_name}: missing {', '.join(missing)}")
    return MySQLConnectionInfo(
        host=host,
        port=int(port),
        user=user,
        password=password,
        database=database,
        unix_socket=extra.get("unix_socket"),
        conn_id=conn_id,
    )


def configured_connection(conn_id: str, environ=None) -> MySQLConnectionInfo | None:
    env = os.environ if environ is None else environ
    raw = env.get(conn_env_var(conn_id))
    return parse_airflow_connection(conn_id, raw) if raw else None


def source_connection(role: str = "reader", settings: Settings | None = None) -> MySQLConnectionInfo:
    """The source connection for a role: 'reader' (extraction, watch) or 'admin' (seeding).

    A configured Airflow connection wins; otherwise the private MariaDB instance is used
    (started if needed).
    """
    settings = settings or Settings.from_env()
    conn_id = {"reader": settings.source_conn_id, "admin": settings.admin_conn_id}[role]
    info = configured_connection(conn_id)
    if info is not None:
        return info
    if role == "admin" and configured_connection(settings.source_conn_id) is not None:
        raise ConnectionConfigError(
            f"{conn_env_var(settings.source_conn_id)} points at an external source, but "
            f"{conn_env_var(settings.admin_conn_id)} is not set: the generator needs an admin "
            "connection to seed it, and never writes through the read-only one"
        )
    from retail_platform.source.local_mariadb import LocalMariaDB

    instance = LocalMariaDB.from_settings(settings).ensure_running()
    return instance.connection(role)


def connect(info: MySQLConnectionInfo, **extra):
    """A mysqlclient (MySQLdb) connection in UTC with utf8mb4."""
    import MySQLdb

    kwargs = info.mysqlclient_kwargs(charset="utf8mb4", use_unicode=True, **extra)
    conn = MySQLdb.connect(**kwargs)
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
    return conn
