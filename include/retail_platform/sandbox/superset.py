"""Superset with the marketing dashboards on this machine (`./platform dashboard`).

Superset lives in its own virtual environment (`.venv-bi`, from the full lock requirements-bi.txt:
Superset 6.1 pins SQLAlchemy below 2, Airflow 3.3 needs 2.x), created on first use and recreated
only when the lock changes. On every start the bundle (include/superset/bundle) is imported again
by include/superset/provision.py, so the dashboards are what the repository says. The secret key
and the users' passwords are generated on first start and kept in `<state>/superset/credentials.json`
(mode 600). Superset binds 127.0.0.1 and reads the published warehouse snapshot read-only.

    retail dashboard [start|stop|status]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from retail_platform.dashboard.settings import DashboardSettings
from retail_platform.sandbox.processes import log_tail, pid_in_file, stop_process, write_private_state

log = logging.getLogger(__name__)
START_TIMEOUT_S = 180


class SupersetError(RuntimeError):
    pass


def private_credentials(path: Path, generate: dict) -> dict:
    """The credentials in ``path``; each name in ``generate`` missing from it is generated once."""
    doc = json.loads(path.read_text()) if path.exists() else {}
    missing = {name: make() for name, make in generate.items() if not doc.get(name)}
    if missing or not path.exists():
        write_private_state(path, doc | missing)
    os.chmod(path, 0o600)
    return doc | missing


@dataclass
class SupersetServer:
    settings: DashboardSettings

    name = "superset"

    @classmethod
    def from_env(cls) -> SupersetServer:
        return cls(DashboardSettings.from_env())

    # ------------------------------------------------------------------ paths
    @property
    def home(self) -> Path:
        return self.settings.superset_dir

    @property
    def credentials_file(self) -> Path:
        return self.home / "credentials.json"

    @property
    def pid_file(self) -> Path:
        return self.home / "gunicorn.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "superset.log"

    @property
    def project_dir(self) -> Path:
        return self.settings.platform.project_dir

    @property
    def venv_python(self) -> Path:
        return self.settings.bi_venv / "bin" / "python"

    def describe(self) -> str:
        return f"Superset on {self.settings.superset_url} (credentials in {self.credentials_file})"

    # ------------------------------------------------------------------ environment
    def credentials(self) -> dict:
        return private_credentials(
            self.credentials_file,
            {
                "secret_key": lambda: secrets.token_urlsafe(48),
                "admin_password": lambda: secrets.token_urlsafe(18),
                "marketing_password": lambda: secrets.token_urlsafe(18),
            },
        )

    def ensure_environment(self) -> None:
        """Create `.venv-bi` from requirements-bi.txt unless it was made from this very lock."""
        venv, lock = self.settings.bi_venv, self.project_dir / "requirements-bi.txt"
        stamp = venv / ".installed"
        want = hashlib.sha256(lock.read_bytes()).hexdigest()
        if stamp.exists() and stamp.read_text().strip() == want and self.venv_python.exists():
            return
        uv = Path(sys.executable).parent / "uv"
        print(
            f"creating Superset's environment in {venv} from {lock.name} (once; about a minute)", flush=True
        )
        started = time.monotonic()
        # The platform's own interpreter (Python 3.11, what both locks are made for).
        python = getattr(sys, "_base_executable", sys.executable)
        _run([str(uv), "venv", "-q", "--allow-existing", "--python", python, str(venv)])
        _run([str(uv), "pip", "install", "-q", "--python", str(self.venv_python), "-r", str(lock)])
        stamp.write_text(want + "\n")
        print(f"Superset's environment ready in {time.monotonic() - started:.0f} s", flush=True)

    def environment(self) -> dict[str, str]:
        creds = self.credentials()
        # Superset gets its own settings only: no connection of the platform leaks into it.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
        env.update(
            {
                "SUPERSET_CONFIG_PATH": str(self.project_dir / "include" / "superset" / "superset_config.py"),
                "SUPERSET_SECRET_KEY": creds["secret_key"],
                "SUPERSET_HOME": str(self.home),
                "RETAIL_SUPERSET_METADATA_URI": self.settings.metadata_uri,
                "RETAIL_SUPERSET_WAREHOUSE_URI": self.settings.warehouse_uri,
                "SUPERSET_ADMIN_PASSWORD": creds["admin_password"],
                "SUPERSET_MARKETING_PASSWORD": creds["marketing_password"],
                "FLASK_APP": "superset.app:create_app()",
                "SUPERSET_LOG_LEVEL": "info",
                # The marts' timestamps are UTC: relative time ranges ("the last 7 days") too.
                "TZ": "UTC",
                "PATH": f"{self.settings.bi_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        return env

    def provision(self) -> dict:
        """Migrate, create the users, import the bundle, grant the marketing role (idempotent)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)  # the metadata database holds password hashes and the connection
        script = self.project_dir / "include" / "superset" / "provision.py"
        with (self.home / "provision.log").open("w") as out:
            result = subprocess.run(
                [str(self.venv_python), str(script)],
                env=self.environment(),
                cwd=self.home,
                stdout=subprocess.PIPE,
                stderr=out,
                text=True,
            )
        if result.returncode != 0:
            tail = "\n".join((self.home / "provision.log").read_text(errors="replace").splitlines()[-30:])
            raise SupersetError(
                f"importing the dashboards failed (log {self.home / 'provision.log'}):\n{tail}"
            )
        return json.loads(result.stdout.strip().splitlines()[-1])

    # ------------------------------------------------------------------ lifecycle
    def pid(self) -> int | None:
        return pid_in_file(self.pid_file)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.settings.superset_url}/health", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def is_running(self) -> bool:
        return self.pid() is not None and self.healthy()

    def ensure_running(self) -> SupersetServer:
        self.ensure_environment()
        self.provision()
        if not self.is_running():
            self._start()
        return self

    def server_argv(self) -> list[str]:
        """gunicorn in the foreground (what `_start` runs in the background, and supervisord under
        `./platform up`)."""
        bind = f"{self.settings.superset_host}:{self.settings.superset_port}"
        return [
            str(self.settings.bi_venv / "bin" / "gunicorn"),
            "--bind", bind,
            "--workers", "1",
            "--worker-class", "gthread",
            "--threads", "8",
            "--timeout", "120",
            "--pid", str(self.pid_file),
            "--access-logfile", "-",
            "superset.app:create_app()",
        ]  # fmt: skip

    def _start(self) -> None:
        if self.pid() is not None:
            self.stop()
        bind = f"{self.settings.superset_host}:{self.settings.superset_port}"
        cmd = self.server_argv()
        with self.log_file.open("ab") as out:
            process = subprocess.Popen(
                cmd, env=self.environment(), cwd=self.home, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SupersetError(f"Superset exited with {process.returncode}:\n{self._log_tail()}")
            if self.healthy():
                return
            time.sleep(1)
        raise SupersetError(
            f"Superset did not answer on {bind} within {START_TIMEOUT_S} s:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        return log_tail(self.log_file)

    def stop(self, timeout: float = 30) -> None:
        pid = self.pid()
        if pid is None:
            return
        # gunicorn's master stops its workers on SIGTERM
        stop_process(pid, timeout=timeout, kill_after=True)


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SupersetError(
            f"{' '.join(cmd[:3])} ... failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


def announce(server: SupersetServer) -> None:
    from retail_platform.warehouse.snapshots import NoPublishedWarehouse, published_snapshot

    settings = server.settings
    print(f"Superset: {settings.superset_url}  (bound to {settings.superset_host})")
    print(f"  dashboard 'Demand now': {settings.dashboard_url}")
    print(
        f"  users: marketing (view only: dashboards, filters, cross-filters; saves nothing), admin; "
        f"passwords in {server.credentials_file} (mode 600)"
    )
    try:
        print(f"  reads the published warehouse {published_snapshot(settings.platform)} read-only")
    except NoPublishedWarehouse:
        print("  no warehouse build has passed yet: run `./platform run` and the dashboard fills in")
    print(f"  stop it with `./platform dashboard stop` (log {server.log_file})")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="retail dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", default="start", choices=["start", "stop", "status"])
    args = parser.parse_args(argv[1:])
    server = SupersetServer.from_env()
    if args.action == "stop":
        running = server.pid() is not None
        server.stop()
        print("Superset stopped" if running else "Superset was not running")
        return 0
    if args.action == "status":
        print(server.describe() if server.is_running() else "Superset is not running")
        return 0 if server.is_running() else 1
    from retail_platform.sandbox.launcher import step

    with step("Superset's own environment (installed on first use)"):
        server.ensure_environment()
    with step(f"Superset: users, dashboards as code, the server on {server.settings.superset_url}"):
        server.ensure_running()
    announce(server)
    return 0
