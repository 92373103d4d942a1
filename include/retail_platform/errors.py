"""The kinds of failure every room tells apart: configuration problems, outages, and failures that
were already told.

A configuration problem (a malformed connection, a wrong password, an invalid contract or setting)
cannot succeed on a retry: it fails at once, names what is at fault and says what to do, and is
announced as a configuration problem. So is storage that cannot be written (a read-only or full
filesystem, permission denied, a missing bucket): retrying writes to it again, to the same effect.
Anything else (a refused connection to a source that answered before, a timeout) is an outage:
retried with backoff.
"""

from __future__ import annotations

import errno

# Errors of the storage itself that no retry heals: a read-only or full filesystem, a quota, a path
# the worker may not write.
UNHEALABLE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM})
# The same as messages: object stores (fsspec, boto3) and pyarrow's writers report them without errno.
UNHEALABLE_MESSAGES = (
    "Read-only file system",
    "No space left on device",
    "Disk quota exceeded",
    "Permission denied",
    "NoSuchBucket",
    "The specified bucket does not exist",
    "AccessDenied",
)


class ConfigurationError(ValueError):
    """A setting, connection or contract that no retry can fix."""


class StorageUnusable(ConfigurationError):
    """Storage the platform must write cannot be written (read-only, full, forbidden, missing)."""


class ConsequentialFailure(RuntimeError):
    """A failure caused by one already reported upstream: the task fails, nobody is alerted twice."""


class ReportedFailure(RuntimeError):
    """A failure whose task composed its own alert (``alert``): delivered once by the failure
    notifier, never retried (a failing dbt test fails the same way on a retry)."""

    def __init__(self, message: str, alert=None):
        super().__init__(message)
        self.alert = alert


def _chain(error: BaseException | None):
    seen = set()
    while error is not None and id(error) not in seen:
        yield error
        seen.add(id(error))
        error = error.__cause__ or error.__context__


def configuration_cause(error: BaseException | None) -> ConfigurationError | None:
    """The configuration problem behind an error (itself, or anywhere in its cause chain)."""
    return next((e for e in _chain(error) if isinstance(e, ConfigurationError)), None)


def unhealable_storage_cause(error: BaseException | None) -> BaseException | None:
    """The storage fault behind an error that no retry heals (read-only, full, forbidden, missing
    bucket), anywhere in its cause chain; None for anything else (an outage, a bug)."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in UNHEALABLE_ERRNOS:
            return e
        if any(marker in str(e) for marker in UNHEALABLE_MESSAGES):
            return e
    return None
