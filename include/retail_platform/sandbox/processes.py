"""What every sandbox server shares: its pid, its port, its log, its state file, and how it stops."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether a process runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # The state follows the parenthesised command name in /proc/<pid>/stat.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
        return False
    return True


def pid_in_file(path: Path) -> int | None:
    """The live process whose pid the file's first line holds, or None."""
    try:
        pid = int(path.read_text().split("\n", 1)[0].strip())
    except (FileNotFoundError, ValueError, PermissionError):
        return None
    return pid if alive(pid) else None


def stop_process(
    pid: int, *, timeout: float, sig: int = signal.SIGTERM, group: bool = False, kill_after: bool = False
) -> bool:
    """Send ``sig`` (to the process group when ``group``) and wait for the process to go; with
    ``kill_after``, SIGKILL its group once the timeout passes. Returns whether it is gone."""
    (os.killpg if group else os.kill)(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    if kill_after:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        return True
    return not alive(pid)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except (FileNotFoundError, PermissionError):
        return "(no log)"


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def write_private_state(path: Path, doc: dict) -> None:
    """Atomically, readable by the owner only: it holds generated passwords."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
    os.replace(tmp, path)


# A server whose process lives but does not answer is slow (a loaded machine, a stopped process), not
# dead: it is waited for this long, then reported, and never killed and replaced by another.
SLOW_SERVER_WAIT_S = 120


def wait_while_alive(pid_of, answers, what: str, timeout: float = SLOW_SERVER_WAIT_S) -> bool:
    """Wait for a live server to answer. True once it answers; False when its process is gone (the
    caller may start it afresh). Raises ``SlowServer`` when it lives and stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = pid_of()
        if pid is None:
            return False
        if answers():
            return True
        time.sleep(0.3)
    raise SlowServer(
        f"{what} (pid {pid_of()}) runs but has not answered for {timeout:.0f} s; it is not replaced "
        "(a server that holds data is never killed by a health check): look at its log, or stop it "
        "with `./platform down`"
    )


class SlowServer(RuntimeError):
    pass
