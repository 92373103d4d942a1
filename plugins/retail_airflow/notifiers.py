"""Notifiers: task failures, configuration problems and source outages, to Slack or (without
Slack) the log and a file.

A failure callback never raises: when a notifier cannot build its message (the contract it reads
is broken, say), it sends a plainer one; when even that fails, it logs.
"""

from __future__ import annotations

import logging

from airflow.sdk import BaseNotifier

from retail_platform.alerts import Alert, deliver, header, scrub, section
from retail_platform.errors import ConsequentialFailure, ReportedFailure, configuration_cause
from retail_platform.settings import Settings

log = logging.getLogger(__name__)


def _run_url(ctx) -> str | None:
    ti = ctx.get("ti") or ctx.get("task_instance")
    return getattr(ti, "log_url", None)


def _where(ctx) -> tuple[str, str, object]:
    ti = ctx.get("ti") or ctx.get("task_instance")
    return getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?"), getattr(ti, "map_index", -1)


def configuration_alert(ctx, problem: Exception) -> Alert:
    """A task failed on a configuration problem: no retries were made, and none would help."""
    dag_id, task_id, map_index = _where(ctx)
    title = f"Configuration problem in {dag_id}.{task_id}: not an outage"
    text = (
        f"*Task:* `{dag_id}.{task_id}` (map index {map_index}) failed at once, without retries: "
        f"retrying cannot fix a configuration.\n*Problem:* {scrub(str(problem))[:1500]}"
    )
    return Alert.message(
        "configuration_error",
        title,
        text,
        link=_run_url(ctx),
        details={
            "dag_id": dag_id,
            "task_id": task_id,
            "run_id": ctx.get("run_id"),
            "problem": scrub(str(problem)),
        },
    )


def plain_alert(ctx, why: Exception) -> Alert:
    """What is said when the proper message could not be built."""
    dag_id, task_id, _ = _where(ctx)
    error = ctx.get("exception")
    title = f"{dag_id}.{task_id} failed"
    text = f"{title}: {scrub(str(error))[:1000] if error else 'see its log'} (the full alert could not be built: {scrub(str(why))[:300]})"
    return Alert(kind="task_failed", title=title, text=text, blocks=[header(title), section(text)])


class SafeNotifier(BaseNotifier):
    """A notifier whose ``notify`` never raises: it falls back to a plain alert, then to the log.

    ``told_by_the_run``: failures another task of the run announces once for all (a lake that
    cannot be written, told by the extraction's publish with every table it hit)."""

    def __init__(self, *, told_by_the_run: tuple[type[BaseException], ...] = ()):
        super().__init__()
        self.told_by_the_run = told_by_the_run

    def notify(self, context_):
        try:
            error = context_.get("exception")
            problem = configuration_cause(error)
            if isinstance(error, self.told_by_the_run):
                log.warning("not announced here: the run announces it once for all (%s)", error)
            elif isinstance(error, ReportedFailure) and error.alert is not None:
                deliver(error.alert, Settings.from_env())  # the task's own account of what failed
            elif problem is not None:
                deliver(configuration_alert(context_, problem), Settings.from_env())
            else:
                self.announce(context_)
        except Exception as exc:
            log.exception("the failure alert could not be built; sending a plain one")
            try:
                deliver(plain_alert(context_, exc), Settings.from_env())
            except Exception:
                log.exception("the plain failure alert could not be delivered either")

    def announce(self, context_) -> None:
        raise NotImplementedError


class PlatformFailureNotifier(SafeNotifier):
    """A task failed after its retries: tell the DAG's owners (default_args on every DAG)."""

    def announce(self, context_):
        dag_id, task_id, map_index = _where(context_)
        error = context_.get("exception")
        if isinstance(error, ConsequentialFailure):
            return  # its cause upstream has already been reported
        ti = context_.get("ti")
        owner = getattr(context_.get("task"), "owner", None)
        title = f"{dag_id}.{task_id} failed"
        text = (
            f"*Task:* `{dag_id}.{task_id}` (map index {map_index}) try {getattr(ti, 'try_number', '?')}\n"
            + (f"*Error:* {scrub(str(error))[:1500]}" if error else "")
        )
        deliver(
            Alert.message(
                "task_failed",
                title,
                text,
                link=_run_url(context_),
                link_label=f"Airflow log · owner {owner}",
                details={
                    "dag_id": dag_id,
                    "task_id": task_id,
                    "run_id": context_.get("run_id"),
                    "owner": owner,
                },
            ),
            Settings.from_env(),
        )


class SourceOutageNotifier(SafeNotifier):
    """The replica did not answer after all retries: announce stale data once (until it recovers)."""

    def __init__(self, source: str):
        super().__init__()
        self.source = source

    def announce(self, context_):
        from retail_platform.extract.runner import report_source_outage

        error = context_.get("exception")
        reason = scrub(f"{type(error).__name__}: {error}") if error else "the source did not answer"
        report_source_outage(Settings.from_env(), self.source, reason, run_url=_run_url(context_))
