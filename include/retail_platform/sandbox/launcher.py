"""Start the sandbox's parts and hand their connections to what the sandbox launches.

Each part (the private MariaDB today; PostgreSQL with pgvector and moto's server as the
recommender and serving rooms add them) runs as its own server under the state folder, bound
to 127.0.0.1, and is described to other processes only as ``AIRFLOW_CONN_*`` variables. A
connection the environment already sets (a real replica, say) is left alone, and that part is
not started.
"""

from __future__ import annotations

import os
from typing import Protocol

from retail_platform.sandbox.settings import SandboxSettings


class SandboxPart(Protocol):
    name: str

    def ensure_running(self) -> SandboxPart: ...

    def is_running(self) -> bool: ...

    def stop(self) -> None: ...

    def connection_env(self) -> dict[str, str]: ...

    @property
    def env_names(self) -> list[str]: ...

    def describe(self) -> str: ...


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


def start(settings: SandboxSettings | None = None, *, only: set[str] | None = None) -> dict[str, str]:
    """Start the parts the environment does not replace; returns the variables to hand on."""
    env: dict[str, str] = {}
    for part in sandbox_parts(settings):
        if only is not None and part.name not in only:
            continue
        if _replaced_by_environment(part, os.environ):
            continue
        part.ensure_running()
        env |= {k: v for k, v in part.connection_env().items() if not os.environ.get(k)}
    return env


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
