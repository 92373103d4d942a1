"""One warehouse build at a time, whatever starts it (a scheduled run, a manual one, the CLI, a
second scheduler): a lock taken before preparation and released after the build is audited and
staged for publishing.

Local warehouse: an exclusive ``flock`` on ``build/build.lock``. The kernel releases it when its
holder exits, however it exits (SIGKILL included), so a killed build never leaves it held. The
holder writes who it is into the file; a build that cannot have the lock within the wait names it.

Redshift (documented, not run here): the same role is played by the ``<schema>__wap`` schemas'
ownership: a build first claims them in a one-row ``<schema>__wap.build_owner`` table inside a
transaction that holds ``LOCK`` on it, and publish renames only schemas its own run claimed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from retail_platform.errors import ReportedFailure
from retail_platform.settings import Settings

POLL_S = 0.5


class WarehouseBusy(ReportedFailure):
    """Another build held the lock for the whole wait: this one fails naming it (no retry: the wait
    was the retry, and the next run builds everything this one would have)."""


def lock_path(settings: Settings) -> Path:
    from retail_platform.warehouse.snapshots import build_path

    return build_path(settings).parent / "build.lock"


def read_holder(path: Path) -> str:
    """Who holds (or last held) the lock, as its holder described itself."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "an unknown process"
    if not info:
        return "an unknown process"
    return f"{info.get('holder')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"


@contextlib.contextmanager
def build_lock(settings: Settings, *, holder: str, wait_s: float):
    """Hold the build lock for the ``with`` block; waits up to ``wait_s`` for another holder."""
    path = lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
    try:
        _acquire(fd, path, holder, wait_s)
        os.ftruncate(fd, 0)
        me = {"holder": holder, "pid": os.getpid(), "host": socket.gethostname()}
        me["since"] = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock (and so does the process's death)


def _acquire(fd: int, path: Path, holder: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise WarehouseBusy(
                    busy_message(path, holder, wait_s), busy_alert(path, holder, wait_s)
                ) from None
            time.sleep(POLL_S)


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
