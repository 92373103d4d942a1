"""A private MariaDB instance that plays the read replica on one machine.

It has its own data directory, socket and port under the project's state folder, so
it never touches a MariaDB/MySQL server the user already runs. It provisions two
users: an admin used only for seeding and a read-only user for every extraction.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from retail_platform.connections import conn_env_var
from retail_platform.sandbox.processes import (
    free_port,
    log_tail,
    pid_in_file,
    port_free,
    read_state,
    stop_process,
    wait_while_alive,
    write_private_state,
)
from retail_platform.sandbox.settings import ADMIN_CONN_ID, SandboxSettings
from retail_platform.sandbox.supervisor import Program
from retail_platform.source.connection import MySQLConnectionInfo

ADMIN_USER = "retail_admin"
READER_USER = "retail_reader"
# The replica's own guard against runaway queries from the platform (seconds).
READER_MAX_STATEMENT_TIME = 900


class LocalMariaDBError(RuntimeError):
    pass


def _binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise LocalMariaDBError(
        f"{name} not found: install the Debian package "
        f"{'mariadb-server-core' if name != 'mariadb' else 'mariadb-client'} (./platform does it when root)"
    )


@dataclass
class LocalMariaDB:
    base_dir: Path
    database: str = "classicmodels"
    requested_port: int | None = None
    # Extra mariadbd options, e.g. a binary log and server id to act as a replication primary.
    server_options: tuple[str, ...] = ()

    name = "mariadb"

    @classmethod
    def from_settings(cls, settings: SandboxSettings | None = None) -> LocalMariaDB:
        settings = settings or SandboxSettings.from_env()
        return cls(settings.mariadb_dir, requested_port=settings.mariadb_port)

    @property
    def conn_ids(self) -> dict[str, str]:
        """The Airflow connection ids the sandbox hands its two users out as."""
        from retail_platform.sandbox.settings import reader_conn_id

        return {"reader": reader_conn_id(), "admin": ADMIN_CONN_ID}

    @property
    def env_names(self) -> list[str]:
        return [conn_env_var(conn_id) for conn_id in self.conn_ids.values()]

    def connection_env(self) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables for the processes the sandbox launches."""
        return {
            conn_env_var(self.conn_ids[role]): self.connection(role).url() for role in ("reader", "admin")
        }

    def describe(self) -> str:
        return f"MariaDB on 127.0.0.1:{self.port} (data in {self.datadir})"

    # ------------------------------------------------------------------ paths
    @property
    def datadir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_path(self) -> Path:
        path = self.base_dir / "mysqld.sock"
        # Unix socket paths are limited to ~107 bytes; deep checkouts fall back to /tmp.
        if len(str(path)) > 100:
            digest = hashlib.sha1(str(self.base_dir).encode()).hexdigest()[:12]
            path = Path(f"/tmp/retail-mariadb-{digest}.sock")
        return path

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "mysqld.pid"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "mysqld.log"

    @property
    def instance_file(self) -> Path:
        return self.base_dir / "instance.json"

    # ------------------------------------------------------------------ state
    def _instance(self) -> dict:
        return read_state(self.instance_file)

    def _save_instance(self, doc: dict) -> None:
        write_private_state(self.instance_file, doc)  # holds the generated passwords

    @property
    def port(self) -> int:
        port = self._instance().get("port")
        if port is None:
            raise LocalMariaDBError(f"private MariaDB in {self.base_dir} is not initialised")
        return int(port)

    def connection(self, role: str) -> MySQLConnectionInfo:
        doc = self._instance()
        users = doc.get("users", {})
        if role not in users:
            raise LocalMariaDBError(f"private MariaDB in {self.base_dir} has no {role} user yet")
        return MySQLConnectionInfo(
            host="127.0.0.1",
            port=int(doc["port"]),
            user=users[role]["user"],
            password=users[role]["password"],
            database=self.database,
            conn_id=self.conn_ids[role],
        )

    # ------------------------------------------------------------------ lifecycle
    def pid(self) -> int | None:
        return pid_in_file(self.pid_file)

    def is_running(self) -> bool:
        return self.pid() is not None and self._accepts_connections()

    def _accepts_connections(self) -> bool:
        try:
            conn = self.root_connect(connect_timeout=2)
        except Exception:
            return False
        conn.close()
        return True

    def ensure_running(self) -> LocalMariaDB:
        if not (self.datadir / "mysql").exists():
            self._initialise()
        # A live server that does not answer is slow, not dead: wait for it, never replace it.
        if not self.is_running() and not wait_while_alive(self.pid, self._accepts_connections, "MariaDB"):
            self._start()
        self._provision()
        return self

    def program(self) -> Program:
        """The server in the foreground under supervisord, on its kept port and data."""
        if not (self.datadir / "mysql").exists():
            self._initialise()
        return Program(self.name, self.server_argv(), dict(os.environ), priority=10, stopwaitsecs=120)

    def after_start(self) -> None:
        self._provision()

    def _initialise(self) -> None:
        if self.datadir.exists():
            shutil.rmtree(self.datadir)  # a half-initialised directory from an interrupted run
        self.datadir.mkdir(parents=True)
        cmd = [
            _binary("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--user={getpass.getuser()}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise LocalMariaDBError(
                f"mariadb-install-db failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def _choose_port(self) -> int:
        doc = self._instance()
        for candidate in (self.requested_port, doc.get("port")):
            if candidate and port_free(int(candidate)):
                return int(candidate)
        if self.requested_port:
            raise LocalMariaDBError(
                f"RETAIL_MARIADB_PORT={self.requested_port} is in use by another process; "
                "choose another port or unset it"
            )
        return free_port()

    def server_argv(self) -> list[str]:
        port = self._choose_port()
        doc = self._instance()
        doc["port"] = port
        self._save_instance(doc)
        (self.base_dir / "tmp").mkdir(parents=True, exist_ok=True)
        return [
            _binary("mariadbd"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.log_file}",
            f"--tmpdir={self.base_dir / 'tmp'}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--user={getpass.getuser()}",
            "--skip-name-resolve",
            *(() if any(o.startswith("--log-bin") for o in self.server_options) else ("--skip-log-bin",)),
            "--default-time-zone=+00:00",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            "--local-infile=1",
            "--max-allowed-packet=256M",
            "--innodb-buffer-pool-size=1G",
            "--innodb-log-file-size=512M",
            # A development copy of the replica: durability per second is enough.
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=200",
            *self.server_options,
        ]

    def _start(self) -> None:
        cmd = self.server_argv()
        with open(self.base_dir / "mysqld.stdout", "ab") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LocalMariaDBError(f"mariadbd exited with {process.returncode}:\n{self._log_tail()}")
            if self.socket_path.exists() and self._accepts_connections():
                return
            time.sleep(0.2)
        raise LocalMariaDBError(f"mariadbd did not accept connections within 120 s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return log_tail(self.log_file)

    def stop(self, timeout: float = 120) -> None:
        pid = self.pid()
        if pid is None:
            return
        if not stop_process(pid, timeout=timeout):  # mariadbd shuts down cleanly on SIGTERM
            raise LocalMariaDBError(f"mariadbd (pid {pid}) did not stop within {timeout:.0f} s")

    # ------------------------------------------------------------------ users
    def root_connect(self, **extra):
        """Superuser over the unix socket (socket authentication: no password exists)."""
        import MySQLdb

        return MySQLdb.connect(
            unix_socket=str(self.socket_path), user=getpass.getuser(), charset="utf8mb4", **extra
        )

    def _provision(self) -> None:
        doc = self._instance()
        users = doc.setdefault("users", {})
        for role, name in (("admin", ADMIN_USER), ("reader", READER_USER)):
            users.setdefault(role, {"user": name, "password": secrets.token_urlsafe(18)})
        self._save_instance(doc)
        db = self.database
        admin, reader = users["admin"], users["reader"]
        statements = [f"CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET latin1"]
        for host in ("127.0.0.1", "localhost"):
            statements += [
                f"CREATE USER IF NOT EXISTS '{admin['user']}'@'{host}' IDENTIFIED BY %(admin)s",
                f"ALTER USER '{admin['user']}'@'{host}' IDENTIFIED BY %(admin)s",
                # The admin seeds classicmodels and scratch copies named classicmodels*.
                f"GRANT ALL PRIVILEGES ON `{db}%`.* TO '{admin['user']}'@'{host}'",
                f"CREATE USER IF NOT EXISTS '{reader['user']}'@'{host}' IDENTIFIED BY %(reader)s",
                f"ALTER USER '{reader['user']}'@'{host}' IDENTIFIED BY %(reader)s "
                f"WITH MAX_STATEMENT_TIME {READER_MAX_STATEMENT_TIME}",
                # Read-only: SELECT on the source, and the right to see replication status.
                f"GRANT SELECT ON `{db}`.* TO '{reader['user']}'@'{host}'",
                f"GRANT SLAVE MONITOR ON *.* TO '{reader['user']}'@'{host}'",
            ]
        conn = self.root_connect()
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    if "%(" in statement:
                        cur.execute(statement, {"admin": admin["password"], "reader": reader["password"]})
                    else:
                        cur.execute(statement)
            conn.commit()
        finally:
            conn.close()

    def grant_reader(self, database: str) -> None:
        """Let the read-only user read another database (tests use scratch copies)."""
        reader = self.connection("reader").user
        conn = self.root_connect()
        try:
            with conn.cursor() as cur:
                for host in ("127.0.0.1", "localhost"):
                    cur.execute(f"GRANT SELECT ON `{database}`.* TO '{reader}'@'{host}'")
            conn.commit()
        finally:
            conn.close()
