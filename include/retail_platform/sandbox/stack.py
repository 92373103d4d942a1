"""The whole platform running as it would in production, on one machine (`./platform up|down`).

`up` starts, each bound to 127.0.0.1 and each in the background (like `docker compose up -d`):

1. the sandbox's servers (the private MariaDB seeded with the classic preset when empty, and the
   other parts registered in the launcher), handed on as ``AIRFLOW_CONN_*`` variables;
2. Airflow: the scheduler (LocalExecutor), the DAG processor, the triggerer and the API server
   (the UI), with authentication on: users `admin` and `operator` (role op) whose passwords are
   generated on first start into ``<state>/stack/airflow-passwords.json`` (mode 600), a full-length
   JWT secret, API secret and Fernet key in ``<state>/stack/credentials.json`` (mode 600); every DAG
   is unpaused and runs on its schedule (cosmos in `watcher` mode, as a scheduler needs);
3. optionally the live generator (`--live RATE`: new orders a second on the replica);
4. Superset with the marketing dashboards (`retail dashboard`), unless `--no-dashboard`;
5. the serving side (stream consumer and recommendation API) when it is installed, unless
   `--no-serving`.

`down` stops all of it, the sandbox's servers included. What runs is recorded in
``<state>/stack/processes.json``; logs are in ``<state>/logs/stack-*.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from retail_platform.sandbox.processes import alive, write_private_state
from retail_platform.sandbox.settings import SandboxSettings
from retail_platform.sandbox.superset import private_credentials

log = logging.getLogger(__name__)
AIRFLOW_USERS = {"admin": "admin", "operator": "op"}  # user: SimpleAuthManager role
AIRFLOW_SERVICES = ("scheduler", "dag-processor", "triggerer", "api-server")
START_TIMEOUT_S = 180


class StackError(RuntimeError):
    pass


@dataclass
class Stack:
    settings: SandboxSettings

    @classmethod
    def from_env(cls) -> Stack:
        return cls(SandboxSettings.from_env())

    @property
    def home(self) -> Path:
        return self.settings.state_dir / "stack"

    @property
    def passwords_file(self) -> Path:
        return self.home / "airflow-passwords.json"

    @property
    def credentials_file(self) -> Path:
        return self.home / "credentials.json"

    @property
    def processes_file(self) -> Path:
        return self.home / "processes.json"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.settings.airflow_host}:{self.settings.airflow_port}"

    def log_file(self, name: str) -> Path:
        return self.settings.state_dir / "logs" / f"stack-{name}.log"

    # ------------------------------------------------------------------ Airflow's environment
    def airflow_secrets(self) -> dict:
        """Generated on first start, kept (mode 600): the same sessions and tokens across restarts."""
        from cryptography.fernet import Fernet

        private_credentials(self.passwords_file, {user: _password for user in AIRFLOW_USERS})
        return private_credentials(
            self.credentials_file,
            {
                "jwt_secret": lambda: secrets.token_urlsafe(64),  # 512 bits: HS512's full key length
                "api_secret_key": lambda: secrets.token_urlsafe(48),
                "fernet_key": lambda: Fernet.generate_key().decode(),
            },
        )

    def airflow_env(self, sandbox_env: dict[str, str]) -> dict[str, str]:
        from retail_platform.sandbox.pipeline import airflow_env

        creds = self.airflow_secrets()
        env = airflow_env(self.settings.platform) | sandbox_env
        env.setdefault("RETAIL_DBT_EXECUTION_MODE", "watcher")  # one dbt build; tasks report each model
        env |= {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{u}:{r}" for u, r in AIRFLOW_USERS.items()
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__CORE__FERNET_KEY": creds["fernet_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": creds["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": creds["api_secret_key"],
            "AIRFLOW__API__HOST": self.settings.airflow_host,
            "AIRFLOW__API__PORT": str(self.settings.airflow_port),
            "AIRFLOW__API__BASE_URL": self.airflow_url,
            # Task processes report to the API server's execution API.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        }
        return env

    # ------------------------------------------------------------------ processes
    def recorded(self) -> dict[str, int]:
        try:
            return json.loads(self.processes_file.read_text())
        except FileNotFoundError:
            return {}

    def _record(self, name: str, pid: int) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        write_private_state(self.processes_file, self.recorded() | {name: pid})

    def running(self) -> dict[str, int]:
        return {name: pid for name, pid in self.recorded().items() if alive(pid)}

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start one service in its own process group (so `down` stops its children too)."""
        path = self.log_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as out:
            process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._record(name, process.pid)
        return process

    def stop_processes(self, timeout: float = 30) -> list[str]:
        recorded = self.recorded()
        for pid in recorded.values():
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(alive(pid) for pid in recorded.values()):
            time.sleep(0.3)
        for pid in recorded.values():
            _signal_group(pid, signal.SIGKILL)
        self.processes_file.unlink(missing_ok=True)
        return list(recorded)


def _password() -> str:
    return secrets.token_urlsafe(18)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _airflow(args: list[str], env: dict[str, str], log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as out:
        result = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, stdout=out, stderr=out)
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
        raise StackError(f"airflow {' '.join(args)} failed (log {log_file}):\n{tail}")


def wait_for_airflow(url: str, processes: list[subprocess.Popen], timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise StackError(f"{' '.join(process.args[2:4])} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise StackError(f"the Airflow API server did not answer on {url} within {timeout:.0f} s")


# ---------------------------------------------------------------------- up and down
def start_sandbox(stack: Stack) -> dict[str, str]:
    """The sandbox's servers, the source seeded when empty; returns their connections."""
    from retail_platform.sandbox import launcher
    from retail_platform.sandbox.seed import seed_source, source_is_seeded

    env = launcher.start(stack.settings)
    os.environ.update(env)  # the seeding below, and every process started from here, use them
    if not source_is_seeded(stack.settings.platform):
        print("seeding the source (preset classic)", flush=True)
        seed_source(preset="classic", replace=True, settings=stack.settings.platform)
    return env


def start_airflow(stack: Stack, sandbox_env: dict[str, str]) -> None:
    """Migrate, pools, manifest; the four services; every DAG unpaused."""
    from retail_platform.sandbox.pipeline import prepare_airflow
    from retail_platform.warehouse.dbt_runner import ensure_manifest

    env = stack.airflow_env(sandbox_env)
    prepare_airflow(stack.settings.platform, env)
    ensure_manifest(stack.settings.platform)
    # DAGs the DAG processor sees first are created unpaused; those an earlier run left paused are
    # unpaused here.
    _airflow(["dags", "unpause", "--treat-dag-id-as-regex", "-y", ".*"], env, stack.log_file("airflow-setup"))
    airflow = [sys.executable, "-m", "airflow"]
    argv = {
        # On one machine the API server reads task logs from disk: no log servers on other ports.
        "scheduler": [*airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [*airflow, "dag-processor"],
        "triggerer": [*airflow, "triggerer", "--skip-serve-logs"],
        "api-server": [*airflow, "api-server", "--host", stack.settings.airflow_host,
                       "--port", str(stack.settings.airflow_port)],
    }  # fmt: skip
    processes = [stack.spawn(name, argv[name], env) for name in AIRFLOW_SERVICES]
    wait_for_airflow(stack.airflow_url, processes)


def start_live(stack: Stack, rate: float) -> None:
    argv = [sys.executable, "-m", "retail_platform.cli", "live", "--rate", str(rate), "--duration", "0"]
    stack.spawn("live", argv, dict(os.environ))


def start_serving(stack: Stack) -> str | None:
    """The consumer and the API (when the serving side is installed); returns the API's address."""
    try:
        from retail_platform.sandbox import serving
        from retail_platform.serving.settings import ServingSettings
    except ImportError:
        return None
    settings = ServingSettings.from_env()
    specs = serving.serving_processes(settings, serving.sandbox_env(settings))
    api = None
    for spec in specs:
        process = stack.spawn(spec.name, spec.argv, spec.env)
        if spec.url:
            api = (spec, process)
    if api is not None:
        serving.wait_ready(api[0].url, api[1])
    return api[0].url if api else None


def up(args) -> int:
    stack = Stack.from_env()
    if stack.running():
        print(f"already running: {', '.join(stack.running())} (`./platform down` first)")
        return 1
    started = time.monotonic()
    try:
        sandbox_env = start_sandbox(stack)
        start_airflow(stack, sandbox_env)
        if args.live:
            start_live(stack, args.live)
        dashboard = None
        if not args.no_dashboard:
            from retail_platform.sandbox.superset import SupersetServer

            dashboard = SupersetServer.from_env().ensure_running()
        api = None if args.no_serving else start_serving(stack)
    except BaseException:
        stack.stop_processes()
        raise
    print_where(stack, dashboard, api, time.monotonic() - started)
    return 0


def print_where(stack: Stack, dashboard, api: str | None, seconds: float) -> None:
    from retail_platform.sandbox import launcher

    print(f"\nthe platform is up ({seconds:.0f} s)")
    print(
        f"Airflow UI          {stack.airflow_url}  users admin, operator: passwords in {stack.passwords_file}"
    )
    print(f"  DAGs unpaused on their schedules; logs {stack.log_file('*')}")
    if dashboard is not None:
        print(f"Superset            {dashboard.settings.dashboard_url}  ({dashboard.describe()})")
    if api:
        print(f"recommendation API  {api}")
    if "live" in stack.running():
        print(f"live generator      new orders on the replica (log {stack.log_file('live')})")
    for part in launcher.sandbox_parts(stack.settings):
        if part.is_running():
            print(f"sandbox             {part.describe()}")
    print("`./platform down` stops everything")


def down(args) -> int:
    from retail_platform.sandbox import launcher
    from retail_platform.sandbox.superset import SupersetServer

    stack = Stack.from_env()
    stopped = stack.stop_processes()
    superset = SupersetServer.from_env()
    if superset.pid() is not None:
        superset.stop()
        stopped.append("superset")
    stopped += launcher.stop(stack.settings)
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="retail up|down", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--live", type=float, default=0, metavar="RATE", help="up: live orders a second")
    parser.add_argument("--no-dashboard", action="store_true", help="up: without Superset")
    parser.add_argument("--no-serving", action="store_true", help="up: without the consumer and the API")
    args = parser.parse_args(argv)
    return up(args) if args.command == "up" else down(args)
