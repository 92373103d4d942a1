"""MySQL/MariaDB connections to the source, from Airflow connections.

The connection comes from Airflow's lookup (``retail_platform.connections``): an
``AIRFLOW_CONN_<ID>`` variable (URI or JSON), the metadata database or a secrets backend.
A missing or malformed connection, or one the server refuses (wrong password, unknown
database), is a configuration error; a server that does not answer is ``SourceUnreachable``,
which the caller turns into an outage (retried) or, for a source that never answered, a
configuration error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from retail_platform.connections import ConnectionMalformed, ConnectionRecord, lookup_connection
from retail_platform.errors import ConfigurationError

# MySQL/MariaDB client errors that say the configuration, not the server's health, is wrong.
ACCESS_DENIED = 1045
DB_ACCESS_DENIED = 1044
UNKNOWN_DATABASE = 1049
UNKNOWN_HOST = 2005
CONFIGURATION_ERRNOS = {ACCESS_DENIED, DB_ACCESS_DENIED, UNKNOWN_DATABASE, UNKNOWN_HOST}
# The server did not answer, or went away: an outage when it answered before.
UNREACHABLE_ERRNOS = {2002, 2003, 2006, 2013}


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

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"

    def with_database(self, database: str) -> MySQLConnectionInfo:
        return MySQLConnectionInfo(
            self.host, self.port, self.user, self.password, database, self.unix_socket, self.conn_id
        )


class SourceConfigurationError(ConfigurationError):
    pass


class SourceUnreachable(RuntimeError):
    """The source did not answer (refused, timed out, went away)."""

    def __init__(self, info: MySQLConnectionInfo, detail: str):
        super().__init__(
            f"the source {info.describe()} (connection {info.conn_id!r}) did not answer: {detail}"
        )
        self.info = info


def mysql_info(record: ConnectionRecord) -> MySQLConnectionInfo:
    if record.conn_type not in ("mysql", "mariadb"):
        raise ConnectionMalformed(
            f"connection {record.conn_id!r} ({record.origin}) must be of type mysql, got {record.conn_type!r}"
        )
    record.require("host", "login", "schema")
    return MySQLConnectionInfo(
        host=record.host,
        port=record.port or 3306,
        user=record.login,
        password=record.password or "",
        database=record.schema,
        unix_socket=record.extra.get("unix_socket"),
        conn_id=record.conn_id,
    )


def parse_airflow_connection(conn_id: str, raw: str) -> MySQLConnectionInfo:
    """A MySQL connection from an AIRFLOW_CONN_* value (URI or JSON)."""
    from retail_platform.connections import parse_connection

    return mysql_info(parse_connection(conn_id, raw))


def source_connection(conn_id: str) -> MySQLConnectionInfo:
    """A source's read-only connection (its contract's ``source.connection_id``), for extraction
    and the schema watch; never a sandbox server."""
    return mysql_info(lookup_connection(conn_id))


def connect(info: MySQLConnectionInfo, **extra):
    """A mysqlclient (MySQLdb) connection in UTC with utf8mb4.

    Raises SourceConfigurationError when the server refuses the connection's settings, and
    SourceUnreachable when it does not answer."""
    import MySQLdb

    kwargs = info.mysqlclient_kwargs(charset="utf8mb4", use_unicode=True, **extra)
    try:
        conn = MySQLdb.connect(**kwargs)
    except MySQLdb.OperationalError as exc:
        code = exc.args[0] if exc.args else None
        if code in CONFIGURATION_ERRNOS:
            raise SourceConfigurationError(
                f"connection {info.conn_id or info.describe()!r} to {info.endpoint} was refused: "
                f"{exc.args[1] if len(exc.args) > 1 else exc}; check its login, password and schema"
            ) from None
        if code in UNREACHABLE_ERRNOS:
            raise SourceUnreachable(info, str(exc.args[1] if len(exc.args) > 1 else exc)) from exc
        raise
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
    return conn
