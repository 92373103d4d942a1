"""Start the sandbox's parts and hand their connections to what the sandbox launches.

Each part (the private MariaDB today; PostgreSQL with pgvector and moto's server as the
recommender and serving rooms add them) runs as its own server under the state folder, bound
to 127.0.0.1, and is described to other processes only as ``AIRFLOW_CONN_*`` variables. A
connection the environment already sets (a real replica, say) is left alone, and that part is
not started.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Protocol

from retail_platform.sandbox.settings import SandboxSettings
from retail_platform.sandbox.supervisor import Program, Supervisor

ANSWER_TIMEOUT_S = 180


class SandboxPart(Protocol):
    name: str

    def ensure_running(self) -> SandboxPart: ...

    def is_running(self) -> bool: ...

    def stop(self) -> None: ...

    def connection_env(self) -> dict[str, str]: ...

    @property
    def env_names(self) -> list[str]: ...

    def describe(self) -> str: ...

    def pid(self) -> int | None: ...

    def program(self) -> Program: ...

    def after_start(self) -> None: ...


def sandbox_parts(settings: SandboxSettings | None = None) -> list[SandboxPart]:
    from retail_platform.sandbox.kinesis import LocalKinesis
    from retail_platform.sandbox.mariadb import LocalMariaDB
    from retail_platform.sandbox.postgres import LocalPostgres

    settings = settings or SandboxSettings.from_env()
    return [
        LocalMariaDB.from_settings(settings),
        LocalPostgres.from_settings(settings),
        LocalKinesis.from_settings(settings),
    ]


def _replaced_by_environment(part: SandboxPart, environ) -> bool:
    """A part one of whose connections the environment already sets: that server is not the sandbox's."""
    return any(environ.get(name) for name in part.env_names)


def source_is_configured(settings) -> bool:
    """The environment names the source's reader connection: the replica is not the sandbox's
    MariaDB, so nothing here seeds or tops it up. (``settings``: the platform's Settings.)"""
    from retail_platform.connections import conn_env_var
    from retail_platform.sandbox.settings import reader_conn_id

    return bool(os.environ.get(conn_env_var(reader_conn_id(settings))))


def _chosen(settings: SandboxSettings, only: set[str] | None) -> list[SandboxPart]:
    return [
        part
        for part in sandbox_parts(settings)
        if (only is None or part.name in only) and not _replaced_by_environment(part, os.environ)
    ]


def _handed_on(part: SandboxPart) -> dict[str, str]:
    return {k: v for k, v in part.connection_env().items() if not os.environ.get(k)}


def start(settings: SandboxSettings | None = None, *, only: set[str] | None = None) -> dict[str, str]:
    """Start the parts the environment does not replace; returns the variables to hand on.

    A part supervisord runs (`./platform serve|up`) is waited for, never started beside it."""
    settings = settings or SandboxSettings.from_env()
    supervisor = Supervisor(settings.state_dir)
    env: dict[str, str] = {}
    for part in _chosen(settings, only):
        if supervisor.manages(part.name):
            wait_answering(part)
        else:
            part.ensure_running()
        env |= _handed_on(part)
    return env


def supervise(
    supervisor: Supervisor, settings: SandboxSettings | None = None, *, only: set[str] | None = None
) -> dict[str, str]:
    """The parts under supervisord, each on its kept port and data: a part running on its own (left
    by `./platform run`) is stopped and handed over. Returns the variables to hand on."""
    settings = settings or SandboxSettings.from_env()
    env: dict[str, str] = {}
    for part in _chosen(settings, only):
        if not supervisor.manages(part.name):
            part.stop()
            supervisor.add(part.program())
        supervisor.wait_running(part.name, timeout=ANSWER_TIMEOUT_S)
        wait_answering(part)
        part.after_start()
        env |= _handed_on(part)
    return env


def wait_answering(part: SandboxPart, timeout: float = ANSWER_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not part.is_running():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sandbox's {part.name} did not answer within {timeout:.0f} s")
        time.sleep(0.3)


def running_env(settings: SandboxSettings | None = None) -> dict[str, str]:
    """The variables of the parts already running (none is started)."""
    env: dict[str, str] = {}
    for part in sandbox_parts(settings):
        if not _replaced_by_environment(part, os.environ) and part.is_running():
            env |= {k: v for k, v in part.connection_env().items() if not os.environ.get(k)}
    return env


def stop(settings: SandboxSettings | None = None) -> list[str]:
    stopped = []
    for part in sandbox_parts(settings):
        if part.is_running():
            part.stop()
            stopped.append(part.name)
    return stopped


def export_lines(env: dict[str, str]) -> str:
    """Shell `export` lines (values single-quoted)."""
    quote = "'\\''"
    return "".join(
        f"export {name}='{value.replace(chr(39), quote)}'\n" for name, value in sorted(env.items())
    )


@contextlib.contextmanager
def step(what: str):
    """Say what starts and how it ended, with its time (the long commands would be silent otherwise)."""
    started = time.monotonic()
    print(f"[{time.strftime('%H:%M:%S')}] {what} ...", flush=True)
    try:
        yield
    except BaseException:
        print(
            f"[{time.strftime('%H:%M:%S')}] {what}: FAILED after {time.monotonic() - started:.0f} s",
            flush=True,
        )
        raise
    print(f"[{time.strftime('%H:%M:%S')}] {what}: done in {time.monotonic() - started:.0f} s", flush=True)
