"""The two kinds of failure every room tells apart: configuration problems and outages.

A configuration problem (a malformed connection, a wrong password, an invalid contract or setting)
cannot succeed on a retry: it fails at once, names what is at fault and says what to do, and is
announced as a configuration problem. Anything else (a refused connection to a source that answered
before, a timeout) is an outage: retried with backoff.
"""

from __future__ import annotations


class ConfigurationError(ValueError):
    """A setting, connection or contract that no retry can fix."""


class ConsequentialFailure(RuntimeError):
    """A failure caused by one already reported upstream: the task fails, nobody is alerted twice."""


def configuration_cause(error: BaseException | None) -> ConfigurationError | None:
    """The configuration problem behind an error (itself, or anywhere in its cause chain)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ConfigurationError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
