"""The whole platform running as it would in production, on one machine (`./platform up|down|status`).

Every long-running part runs under supervisord (``sandbox/supervisor.py``): restarted when it dies,
with backoff, its death and return announced once, one log a program in ``<state>/logs/``. `up`
starts, in dependency order, each step waiting until the one before answers, each bound to 127.0.0.1:

1. supervisord itself;
2. the sandbox's servers (the private MariaDB seeded with the classic preset when empty, PostgreSQL
   with pgvector, Kinesis), each on its kept port and data, handed on as ``AIRFLOW_CONN_*`` variables;
3. Airflow's metadata database: a database ``airflow`` of its own in the sandbox's PostgreSQL, never
   SQLite; migrated, pools set, the dbt manifest prepared, every DAG unpaused;
4. Airflow's API server (the UI), with authentication on: users `admin` and `operator` (role op)
   whose passwords are generated on first start into ``<state>/stack/airflow-passwords.json`` (mode
   600), a full-length JWT secret, API secret and Fernet key in ``<state>/stack/credentials.json``
   (mode 600); then, once it answers (task processes report to it), the DAG processor, the scheduler
   (LocalExecutor) and the triggerer;
5. optionally the live generator (`--live RATE`: new orders a second on the replica);
6. Superset with the marketing dashboards, unless `--no-dashboard`;
7. the serving side (stream consumer and recommendation API), unless `--no-serving`.

`status` shows every part's state; `down` stops all of it, the sandbox's servers included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from retail_platform.sandbox.airflow_setup import airflow_command, airflow_env, prepare_airflow
from retail_platform.sandbox.launcher import step
from retail_platform.sandbox.processes import alive
from retail_platform.sandbox.settings import SandboxSettings
from retail_platform.sandbox.superset import private_credentials
from retail_platform.sandbox.supervisor import Program, Supervisor

log = logging.getLogger(__name__)
AIRFLOW_USERS = {"admin": "admin", "operator": "op"}  # user: SimpleAuthManager role
# In start order: the API server first (task processes report to it), the scheduler after it.
AIRFLOW_SERVICES = ("api-server", "dag-processor", "scheduler", "triggerer")
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
        creds = self.airflow_secrets()
        env = airflow_env(self.settings.platform) | sandbox_env
        # Each task is a process that imports Airflow (~1 CPU s): 32 at once (the default) thrash a
        # small machine until heartbeats fail. Two a core keeps the cores busy and the machine live.
        env.setdefault("AIRFLOW__CORE__PARALLELISM", str(2 * max(1, len(os.sched_getaffinity(0)))))
        # A scheduler killed mid-task leaves the task orphaned until a scheduler's periodic check
        # resets it for a retry: every 300 s by default, which held a build back 5 minutes in the
        # prod soak (2026-12-07). The check is one query; a build's later try stops the orphan.
        env.setdefault("AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL", "60")
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


# ---------------------------------------------------------------------- up and down
AIRFLOW_DATABASE = "airflow"


def start_sandbox(stack: Stack, supervisor: Supervisor) -> dict[str, str]:
    """The sandbox's servers under the supervisor, the source seeded when empty; their connections."""
    from retail_platform.sandbox import launcher
    from retail_platform.sandbox.seed import bring_source_to_present, seed_source, source_is_seeded

    own_source = launcher.source_is_configured(stack.settings.platform)
    env = launcher.supervise(supervisor, stack.settings)
    os.environ.update(env)  # the seeding below, and every process started from here, use them
    if not source_is_seeded(stack.settings.platform):
        with step("seeding the source (preset classic, calendar ending now)"):
            seed_source(preset="classic", replace=True, settings=stack.settings.platform, ends_now=True)
    elif not own_source:  # the sandbox's own, days old: played through the hours it missed, as `run` does
        with step("bringing the source to the present"):
            print(bring_source_to_present(stack.settings.platform).describe(), flush=True)
    return env


def airflow_metadata_url(stack: Stack) -> str:
    """Airflow's metadata: a database of its own in the sandbox's PostgreSQL (SQLite locks under a
    scheduler's load: heartbeats failed and tasks ended upstream_failed)."""
    from retail_platform.sandbox.postgres import LocalPostgres

    return LocalPostgres.from_settings(stack.settings).database_url(AIRFLOW_DATABASE)


def running_airflow_env(settings: SandboxSettings | None = None) -> dict[str, str]:
    """While `up` runs: what an `airflow` command needs to act on that stack (its metadata database,
    Fernet key, API server) and the platform settings its scheduler was given, so
    `./platform airflow dags list-runs|trigger|backfill` see and change the scheduler's runs, not a
    private SQLite of their own, and a DAG file parsed there is the DAG the stack runs (a command
    that parses DAGs without the stack's RETAIL_EXTRACT_SCHEDULE saved the hourly default over its
    short schedule, and an interval got no run). Empty when no stack runs; the environment's own
    values win."""
    stack = Stack(settings or SandboxSettings.from_env())
    supervisor = Supervisor(stack.settings.state_dir)
    if not (supervisor.is_running() and supervisor.manages("airflow-scheduler")):
        return {}
    try:  # what the scheduler was really started with
        env = json.loads(supervisor.env_file("airflow-scheduler").read_text())
    except (FileNotFoundError, ValueError):
        env = stack.airflow_env({}) | {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_metadata_url(stack)}
    return {k: v for k, v in env.items() if k.startswith(("AIRFLOW__", "RETAIL_")) and not os.environ.get(k)}


def airflow_programs(stack: Stack, env: dict[str, str]) -> dict[str, Program]:
    airflow = [sys.executable, "-m", "airflow"]
    argv = {
        "api-server": [*airflow, "api-server", "--host", stack.settings.airflow_host,
                       "--port", str(stack.settings.airflow_port)],
        "dag-processor": [*airflow, "dag-processor"],
        # On one machine the API server reads task logs from disk: no log servers on other ports.
        "scheduler": [*airflow, "scheduler", "--skip-serve-logs"],
        "triggerer": [*airflow, "triggerer", "--skip-serve-logs"],
    }  # fmt: skip
    return {
        name: Program(f"airflow-{name}", argv[name], env, priority=20 + i, stopwaitsecs=60)
        for i, name in enumerate(AIRFLOW_SERVICES)
    }


def start_airflow(
    stack: Stack, supervisor: Supervisor, sandbox_env: dict[str, str], metadata_url: str
) -> None:
    """Migrate, pools, manifest, unpause; the API server; once it answers, the other three."""
    from retail_platform.warehouse.dbt_runner import ensure_manifest

    env = stack.airflow_env(sandbox_env) | {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url}
    with step("Airflow: metadata migrated, pools, dbt manifest, DAGs unpaused"):
        prepare_airflow(stack.settings.platform, env)
        ensure_manifest(stack.settings.platform)
        # DAGs the DAG processor sees first are created unpaused; those an earlier run left paused
        # are unpaused here.
        unpause = ["dags", "unpause", "--treat-dag-id-as-regex", "-y", ".*"]
        airflow_command(unpause, stack.log_file("airflow-setup"), env, append=True)
    programs = airflow_programs(stack, env)
    with step(f"Airflow API server on {stack.airflow_url}"):
        supervisor.add(programs["api-server"])
        wait_for_airflow(stack.airflow_url, supervisor)
    with step("Airflow DAG processor, scheduler and triggerer"):
        supervisor.add(*(programs[name] for name in AIRFLOW_SERVICES if name != "api-server"))
        for name in AIRFLOW_SERVICES:
            supervisor.wait_running(programs[name].name, timeout=START_TIMEOUT_S)


def wait_for_airflow(url: str, supervisor: Supervisor, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = supervisor.state("airflow-api-server")
        if state is not None and state.state == "FATAL":
            raise StackError(
                f"the Airflow API server could not start (log {supervisor.log_file(state.name)})"
            )
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise StackError(f"the Airflow API server did not answer on {url} within {timeout:.0f} s")


def start_live(supervisor: Supervisor, rate: float, spike_every_min: float = 60.0) -> None:
    argv = [sys.executable, "-m", "retail_platform.cli", "live", "--rate", str(rate), "--duration", "0",
            "--spike-every", str(spike_every_min)]  # fmt: skip
    supervisor.add(Program("live", argv, dict(os.environ), priority=60))


def start_serving(stack: Stack, supervisor: Supervisor, sandbox_env: dict[str, str]) -> str | None:
    """The consumer and the API (when the serving side is installed); returns the API's address."""
    try:
        from retail_platform.sandbox import serving
        from retail_platform.serving.settings import ServingSettings
    except ImportError:
        return None
    settings = ServingSettings.from_env()
    return serving.supervise_serving(supervisor, settings, sandbox_env | serving.api_key_env(settings))


def up(args) -> int:
    stack = Stack.from_env()
    supervisor = Supervisor(stack.settings.state_dir)
    if supervisor.manages("airflow-scheduler"):
        print("already running (`./platform status` shows it; `./platform down` first)")
        return 1
    started = time.monotonic()
    try:
        with step("supervisord"):
            supervisor.start()
        with step("the sandbox's servers (MariaDB, PostgreSQL + pgvector, Kinesis), supervised"):
            sandbox_env = start_sandbox(stack, supervisor)
        with step("Airflow's metadata database in the sandbox's PostgreSQL"):
            metadata_url = airflow_metadata_url(stack)
        start_airflow(stack, supervisor, sandbox_env, metadata_url)
        if args.live:
            with step(f"live generator ({args.live} orders a second)"):
                start_live(supervisor, args.live, args.spike_every)
        dashboard = None
        if not args.no_dashboard:
            with step("Superset with the marketing dashboards"):
                dashboard = start_dashboard(supervisor)
        api = None
        if not args.no_serving:
            with step("the stream consumer and the recommendation API"):
                api = start_serving(stack, supervisor, sandbox_env)
    except BaseException:
        supervisor.shutdown()
        raise
    print_where(stack, supervisor, dashboard, api, time.monotonic() - started)
    return 0


def start_dashboard(supervisor: Supervisor):
    from retail_platform.sandbox.superset import SupersetServer

    server = SupersetServer.from_env()
    server.ensure_environment()
    server.provision()
    if not supervisor.manages("superset"):
        server.stop()  # one started by `./platform dashboard`: handed over to the supervisor
        supervisor.add(
            Program(
                "superset", server.server_argv(), server.environment(), priority=70, directory=server.home
            )
        )
    supervisor.wait_running("superset", timeout=START_TIMEOUT_S)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.healthy():
        if time.monotonic() > deadline:
            raise StackError(f"Superset did not answer (log {supervisor.log_file('superset')})")
        time.sleep(1)
    return server


def print_where(stack: Stack, supervisor: Supervisor, dashboard, api: str | None, seconds: float) -> None:
    from retail_platform.sandbox import launcher

    print(f"\nthe platform is up ({seconds:.0f} s)")
    print(
        f"Airflow UI          {stack.airflow_url}  users admin, operator: passwords in {stack.passwords_file}"
    )
    print("  DAGs unpaused on their schedules; metadata in the sandbox's PostgreSQL (database airflow)")
    if dashboard is not None:
        print(f"Superset            {dashboard.settings.dashboard_url}  ({dashboard.describe()})")
    if api:
        print(f"recommendation API  {api}")
    if supervisor.manages("live"):
        print(f"live generator      new orders on the replica (log {supervisor.log_file('live')})")
    for part in launcher.sandbox_parts(stack.settings):
        if part.is_running():
            print(f"sandbox             {part.describe()}")
    print(f"logs                {supervisor.log_dir}/<part>.log")
    print("`./platform status` shows every part; `./platform down` stops everything")


def down(args) -> int:
    from retail_platform.sandbox import launcher
    from retail_platform.sandbox.superset import SupersetServer

    stack = Stack.from_env()
    supervisor = Supervisor(stack.settings.state_dir)
    stopped = list(supervisor.states())
    supervisor.shutdown()
    stopped += stack.stop_processes()  # recorded by an earlier version of `up`
    superset = SupersetServer.from_env()
    if superset.pid() is not None:
        superset.stop()
        stopped.append("superset")
    stopped += launcher.stop(stack.settings)
    print(f"stopped: {', '.join(dict.fromkeys(stopped)) or 'nothing was running'}")
    return 0


def status(args) -> int:
    """Every part's state in one table: the supervised programs, then parts running on their own."""
    from retail_platform.sandbox import launcher

    stack = Stack.from_env()
    supervisor = Supervisor(stack.settings.state_dir)
    states = supervisor.states()
    if not supervisor.is_running():
        print(f"supervisord is not running (state folder {stack.settings.state_dir})")
    for state in states.values():
        print(f"{state.name:<24} {state.state:<9} {state.description}")
    for part in launcher.sandbox_parts(stack.settings):
        if part.name not in states and part.is_running():
            print(f"{part.name:<24} {'RUNNING':<9} on its own (not supervised): {part.describe()}")
    return 0 if states and all(s.state == "RUNNING" for s in states.values()) else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="retail up|down|status", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--live", type=float, default=0, metavar="RATE", help="up: live orders a second")
    parser.add_argument(
        "--spike-every",
        type=float,
        default=60.0,
        metavar="MINUTES",
        help="up --live: a demand spike every MINUTES",
    )
    parser.add_argument("--no-dashboard", action="store_true", help="up: without Superset")
    parser.add_argument("--no-serving", action="store_true", help="up: without the consumer and the API")
    args = parser.parse_args(argv)
    return {"up": up, "down": down, "status": status}[args.command](args)
