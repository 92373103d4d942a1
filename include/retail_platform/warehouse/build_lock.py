"""One warehouse build at a time, whatever starts it (a scheduled run, a manual one, the CLI, a
second scheduler): a lock taken before preparation and released after the build is audited and
staged for publishing.

Local warehouse: an exclusive ``flock`` on ``build/build.lock``. The kernel releases it when its
holder exits, however it exits (SIGKILL included), so a killed build never leaves it held. The
holder writes who it is into the file; a build that cannot have the lock within the wait names it.

A later try of the same Airflow task supersedes an earlier one still holding the lock: Airflow
retried because it gave that try up (its scheduler was killed mid-build and the new one reset the
task), but the old process, its supervisor gone, builds on unsupervised. Measured in the soak
(2026-12-07, prod preset): the retry waited its 120 s for its own predecessor and failed the run.
The retry now stops it (SIGTERM, then SIGKILL) and builds: a build killed mid-way publishes nothing.

Redshift (documented, not run here): the same role is played by the ``<schema>__wap`` schemas'
ownership: a build first claims them in a one-row ``<schema>__wap.build_owner`` table inside a
transaction that holds ``LOCK`` on it, and publish renames only schemas its own run claimed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from retail_platform.errors import ReportedFailure
from retail_platform.settings import Settings

log = logging.getLogger(__name__)
POLL_S = 0.5
SUPERSEDED_GRACE_S = 15.0  # after SIGTERM, before SIGKILL


@dataclass(frozen=True)
class TaskTry:
    """One try of one Airflow task instance (``dag_id/run_id/task_id``) that holds or wants the lock."""

    task: str
    try_number: int

    def supersedes(self, info: dict) -> bool:
        """The lock's holder (as it described itself) is an earlier try of this task, on this host."""
        return (
            info.get("task") == self.task
            and isinstance(info.get("try"), int)
            and info["try"] < self.try_number
            and info.get("host") == socket.gethostname()
            and isinstance(info.get("pid"), int)
            and info["pid"] != os.getpid()
        )


class WarehouseBusy(ReportedFailure):
    """Another build held the lock for the whole wait: this one fails naming it (no retry: the wait
    was the retry, and the next run builds everything this one would have)."""


def lock_path(settings: Settings) -> Path:
    from retail_platform.warehouse.snapshots import build_path

    return build_path(settings).parent / "build.lock"


def _holder_info(path: Path) -> dict:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def read_holder(path: Path) -> str:
    """Who holds (or last held) the lock, as its holder described itself."""
    info = _holder_info(path)
    if not info:
        return "an unknown process"
    return f"{info.get('holder')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"


@contextlib.contextmanager
def build_lock(settings: Settings, *, holder: str, wait_s: float, task_try: TaskTry | None = None):
    """Hold the build lock for the ``with`` block; waits up to ``wait_s`` for another holder (an
    earlier try of ``task_try``'s task is stopped, not waited for)."""
    path = lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
    try:
        _acquire(fd, path, holder, wait_s, task_try)
        os.ftruncate(fd, 0)
        me = {"holder": holder, "pid": os.getpid(), "host": socket.gethostname()}
        if task_try is not None:
            me |= {"task": task_try.task, "try": task_try.try_number}
        me["since"] = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock (and so does the process's death)


def _acquire(fd: int, path: Path, holder: str, wait_s: float, task_try: TaskTry | None) -> None:
    deadline = time.monotonic() + wait_s
    terminated: dict[int, float] = {}  # superseded pid -> when it was sent SIGTERM
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            info = _holder_info(path)
            # The lock is held, so the pid it names is alive and is its holder (the lock dies with
            # its process and is never inherited): no other process can be hit.
            if (
                task_try is not None
                and task_try.supersedes(info)
                and _stop_superseded(info, task_try, terminated)
            ):
                deadline = max(deadline, time.monotonic() + POLL_S * 4)
            elif time.monotonic() >= deadline:
                raise WarehouseBusy(
                    busy_message(path, holder, wait_s), busy_alert(path, holder, wait_s)
                ) from None
            time.sleep(POLL_S)


def _stop_superseded(info: dict, task_try: TaskTry, terminated: dict[int, float]) -> bool:
    """SIGTERM to the earlier try, SIGKILL after the grace; False when it may not be signalled."""
    pid = info["pid"]
    try:
        if pid not in terminated:
            log.warning(
                "%s try %d: the build lock is held by try %d of the same task (pid %d), which Airflow "
                "gave up on; stopping it",
                task_try.task,
                task_try.try_number,
                info["try"],
                pid,
            )
            os.kill(pid, signal.SIGTERM)
            terminated[pid] = time.monotonic()
        elif time.monotonic() - terminated[pid] > SUPERSEDED_GRACE_S:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # gone already: the lock is free at the next poll
    except PermissionError:
        log.warning("the earlier try (pid %d) may not be signalled: waiting for it instead", pid)
        return False
    return True


def busy_message(path: Path, holder: str, wait_s: float) -> str:
    return (
        f"warehouse build {holder} did not start: another build holds the build lock {path} "
        f"after {wait_s:.0f} s of waiting: {read_holder(path)}"
    )


def busy_alert(path: Path, holder: str, wait_s: float):
    from retail_platform.alerts import Alert

    text = (
        f"{busy_message(path, holder, wait_s)}. Nothing was built or published by this run; the "
        "readers keep the last build that passed, and the next run builds everything this one would have."
    )
    return Alert.message(
        "warehouse_busy",
        "Warehouse build did not start: another build holds the lock",
        text,
        details={"holder": read_holder(path), "run": holder, "lock": str(path)},
    )
