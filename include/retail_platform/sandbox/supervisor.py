"""Every long-running part of `./platform up` and `./platform serve` under supervisord.

Why supervisord (PyPI ``supervisor``): it is the long-kept, widely deployed process supervisor that
already does what the platform needs and nothing more — it restarts a program that exits (with a
growing delay while it keeps failing to start), keeps one log a program, stops a program's whole
process group, answers ``status`` over a private unix socket, and reports every state change to an
event listener (which logs and announces deaths and returns once). circus needs ZeroMQ; honcho runs
a Procfile in the foreground and gives up when one part exits.

A health check is never a reason to kill: supervisord restarts a program only once its process has
exited. A slow server (a stopped process, a loaded machine) is left alone.

Layout under ``<state>/supervisor/``: ``supervisord.conf`` (written by the platform), one
``programs/<name>.conf`` a program, ``env/<name>.json`` (mode 600: the connections a program gets,
passwords included, kept out of the configuration and of ``ps``), the pid file and the socket.
Program logs are ``<state>/logs/<name>.log``.

``python -m retail_platform.sandbox.supervisor exec ENV_FILE -- ARGV...`` starts a program with the
environment in ENV_FILE (exec: supervisord's pid is the program's); ``... listen`` is the event
listener.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

from retail_platform.sandbox.processes import pid_in_file, write_private_state

log = logging.getLogger(__name__)
START_TIMEOUT_S = 30
# A program that exits within STARTSECS of starting counts as "could not start": supervisord waits
# 1 s, 2 s, 3 s ... between such attempts, and gives up (FATAL, announced) after START_RETRIES.
# One that ran longer is restarted at once.
STARTSECS = 3
START_RETRIES = 20


class SupervisorError(RuntimeError):
    pass


@dataclass(frozen=True)
class Program:
    name: str
    argv: list[str]
    env: dict[str, str] | None = field(default=None, repr=False)  # None: supervisord's own
    priority: int = 500  # start order (lower first) when supervisord itself starts
    user: str | None = None  # run as this system user (only when supervisord runs as root)
    stopsignal: str = "TERM"
    stopwaitsecs: int = 30
    directory: Path | None = None  # its working directory (default: the project's)


@dataclass(frozen=True)
class ProgramState:
    name: str
    state: str  # RUNNING, STARTING, BACKOFF, EXITED, FATAL, STOPPED
    pid: int | None
    description: str


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # supervisord expands %(name)s in its configuration


@dataclass
class Supervisor:
    state_dir: Path

    @property
    def home(self) -> Path:
        return self.state_dir / "supervisor"

    @property
    def conf_file(self) -> Path:
        return self.home / "supervisord.conf"

    @property
    def pid_file(self) -> Path:
        return self.home / "supervisord.pid"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    @property
    def socket_path(self) -> Path:
        path = self.home / "supervisor.sock"
        if len(str(path)) > 100:  # unix socket paths are limited to ~107 bytes
            digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
            path = Path(f"/tmp/retail-supervisor-{digest}.sock")
        return path

    # ------------------------------------------------------------------ configuration
    def _main_conf(self) -> str:
        python = sys.executable
        listener = self._command("announcer", [python, "-m", __name__, "listen"], dict(os.environ))
        return f"""; written by retail_platform.sandbox.supervisor: edits are overwritten
[unix_http_server]
file={self.socket_path}
chmod=0700

[supervisord]
logfile={self.log_file("supervisord")}
pidfile={self.pid_file}
childlogdir={self.log_dir}
directory={os.environ.get("RETAIL_PROJECT_DIR", os.getcwd())}
identifier=retail-{hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:8]}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{self.socket_path}

; Logs and announces (alerts) each program's death and return, once.
[eventlistener:announcer]
command={_escape(listener)}
events=PROCESS_STATE
buffer_size=1000
autorestart=true
stderr_logfile={self.log_file("announcer")}
priority=1

[include]
files={self.home / "programs"}/*.conf
"""

    def env_file(self, name: str) -> Path:
        """The environment program ``name`` is started with (private: it holds connections)."""
        return self.home / "env" / f"{name}.json"

    def _command(self, name: str, argv: list[str], env: dict[str, str] | None) -> str:
        if env is None:
            return shlex.join(argv)
        env_file = self.env_file(name)
        write_private_state(env_file, env)
        return shlex.join([sys.executable, "-m", __name__, "exec", str(env_file), "--", *argv])

    def _program_conf(self, program: Program) -> str:
        user = f"user={program.user}\n" if program.user and os.geteuid() == 0 else ""
        directory = f"directory={program.directory}\n" if program.directory else ""
        return f"""[program:{program.name}]
command={_escape(self._command(program.name, program.argv, program.env))}
priority={program.priority}
autostart=true
autorestart=true
startsecs={STARTSECS}
startretries={START_RETRIES}
stopsignal={program.stopsignal}
stopwaitsecs={program.stopwaitsecs}
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={self.log_file(program.name)}
stdout_logfile_maxbytes=20MB
stdout_logfile_backups=3
{user}{directory}"""

    # ------------------------------------------------------------------ lifecycle
    def pid(self) -> int | None:
        return pid_in_file(self.pid_file)

    def is_running(self) -> bool:
        if self.pid() is None:
            return False
        try:
            self._rpc().supervisor.getState()
        except (OSError, xmlrpc.client.Error):
            return False
        return True

    def start(self) -> None:
        """supervisord in the background (it outlives this process), with no program yet."""
        if self.is_running():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "programs").mkdir(exist_ok=True)
        # A fresh supervisord starts empty: programs of an earlier one are added again by whoever
        # starts them (a part may meanwhile run on its own and must be handed over first).
        for stale in (self.home / "programs").glob("*.conf"):
            stale.unlink()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.conf_file.write_text(self._main_conf())
        result = subprocess.run(
            [str(Path(sys.executable).parent / "supervisord"), "-c", str(self.conf_file)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise SupervisorError(f"supervisord did not start: {result.stdout}{result.stderr}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.is_running():
            if time.monotonic() > deadline:
                raise SupervisorError(f"supervisord did not answer (log {self.log_file('supervisord')})")
            time.sleep(0.2)

    def add(self, *programs: Program) -> None:
        """Write the programs and start those new or changed (unchanged running ones are left alone)."""
        for program in programs:
            path = self.home / "programs" / f"{program.name}.conf"
            text = self._program_conf(program)
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        self._ctl("update")

    def remove(self, name: str) -> None:
        (self.home / "programs" / f"{name}.conf").unlink(missing_ok=True)
        self._ctl("update")

    def shutdown(self, timeout: float = 180) -> bool:
        """Stop every program (each with its stop signal, longest servers last) and supervisord."""
        pid = self.pid()
        if pid is None:
            return False
        self._ctl("shutdown")
        deadline = time.monotonic() + timeout
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.3)
        return True

    # ------------------------------------------------------------------ state
    def _rpc(self):
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, serverurl=f"unix://{self.socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def _ctl(self, *args: str) -> str:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(self.conf_file), *args],
            capture_output=True,
            text=True,
        )
        # supervisorctl exits non-zero when a program is not running: the caller reads the state.
        return result.stdout + result.stderr

    def states(self) -> dict[str, ProgramState]:
        if not self.is_running():
            return {}
        return {
            info["name"]: ProgramState(
                info["name"], info["statename"], info["pid"] or None, info["description"]
            )
            for info in self._rpc().supervisor.getAllProcessInfo()
            if info["group"] != "announcer"
        }

    def state(self, name: str) -> ProgramState | None:
        return self.states().get(name)

    def manages(self, name: str) -> bool:
        state = self.state(name)
        return state is not None and state.state not in ("STOPPED", "FATAL")

    def wait_running(self, name: str, timeout: float = START_TIMEOUT_S) -> ProgramState:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(name)
            if state is not None and state.state == "RUNNING":
                return state
            if state is not None and state.state == "FATAL" or time.monotonic() > deadline:
                raise SupervisorError(
                    f"{name} is {state.state if state else 'unknown'} (log {self.log_file(name)})"
                )
            time.sleep(0.3)


# ---------------------------------------------------------------------- running inside supervisord
def exec_with_env(env_file: str, argv: list[str]) -> None:
    env = json.loads(Path(env_file).read_text())
    reap_orphans_of_last_run(Path(env_file).with_suffix(".pgid"))
    os.execve(argv[0], argv, env)


def reap_orphans_of_last_run(pgid_file: Path) -> list[int]:
    """Stop what the program's previous run left behind, then record this run's process group.

    supervisord starts each program in a process group of its own and stops the whole group, but a
    program killed from outside (SIGKILL of the scheduler) leaves its children behind: LocalExecutor's
    workers then idle forever beside the new scheduler's (seen: three per kill). Only orphans (parent
    1) still in the old group are stopped, so a reused group number never touches a live program."""
    try:
        previous = int(pgid_file.read_text())
    except (FileNotFoundError, ValueError):
        previous = None
    reaped = []
    if previous and previous != os.getpgrp():
        for pid in _orphans_in_group(previous):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                reaped.append(pid)
    pgid_file.write_text(str(os.getpgrp()))
    return reaped


def _orphans_in_group(pgid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its closing paren.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == 1 and int(fields[2]) == pgid:
            found.append(int(stat.parent.name))
    return found


class Announcer:
    """Turns supervisord's state changes into one announcement a death and one a return."""

    def __init__(self, deliver=None):
        self.down_since: dict[str, float] = {}
        self.deliver = deliver or _deliver_alert

    def on_event(self, event: str, headers: dict[str, str]) -> None:
        name, state = headers.get("processname", "?"), event.removeprefix("PROCESS_STATE_")
        if state in ("EXITED", "BACKOFF") and name not in self.down_since:
            self.down_since[name] = time.monotonic()
            how = "exited" if state == "EXITED" else "could not start"
            self._announce(
                "service_down",
                f"{name} {how}; restarting it",
                f"{name} (pid {headers.get('pid', '?')}) {how} unexpectedly (was {headers.get('from_state')}); "
                "supervisord restarts it with backoff. The other parts keep running.",
                name,
            )
        elif state == "FATAL":
            self.down_since.pop(name, None)
            self._announce(
                "service_failed",
                f"{name} gave up after {START_RETRIES} attempts",
                f"{name} kept exiting at start; it stays down until an operator looks at its log "
                "and runs `./platform serve` or `./platform up` again.",
                name,
            )
        elif state == "RUNNING" and name in self.down_since:
            seconds = time.monotonic() - self.down_since.pop(name)
            self._announce(
                "service_back", f"{name} is back", f"{name} runs again after {seconds:.0f} s.", name
            )
        elif state in ("STOPPED", "STOPPING"):
            self.down_since.pop(name, None)  # stopped on purpose: nothing to announce

    def _announce(self, kind: str, title: str, text: str, name: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {title}: {text}", file=sys.stderr, flush=True)
        try:
            self.deliver(kind, title, text, name)
        except Exception as exc:  # an alert that cannot go out is logged; the listener lives on
            print(f"alert not delivered: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def _deliver_alert(kind: str, title: str, text: str, name: str) -> None:
    from retail_platform.alerts import Alert, deliver

    deliver(Alert.message(kind, title, text, details={"program": name}))


def _warm_up() -> None:
    """Import what an announcement needs before the first event: a death is then timed and told at
    once, not after Airflow's import."""
    try:
        from retail_platform.alerts import slack_configured

        slack_configured()
    except Exception as exc:
        print(f"alerts not ready: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def listen() -> None:
    from supervisor import childutils

    # stdout is the protocol channel to supervisord: anything else printed there (a library's warning)
    # would stall the listener. Keep it for the protocol only; everything else goes to stderr.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _warm_up()
    announcer = Announcer()
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, protocol)
        if headers["eventname"].startswith("PROCESS_STATE"):
            event_headers, _ = childutils.eventdata(payload + "\n")
            announcer.on_event(headers["eventname"], event_headers)
        childutils.listener.ok(protocol)


def main(argv: list[str]) -> int:
    if argv[:1] == ["exec"] and "--" in argv:
        split = argv.index("--")
        exec_with_env(argv[1], argv[split + 1 :])
    elif argv[:1] == ["listen"]:
        listen()
    else:
        print("usage: python -m retail_platform.sandbox.supervisor exec ENV_FILE -- ARGV | listen")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
