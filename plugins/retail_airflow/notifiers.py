"""Notifiers: task failures and source outages, to Slack or (without Slack) the log and a file."""

from __future__ import annotations

from airflow.sdk import BaseNotifier

from retail_platform.alerts import Alert, ConsequentialFailure, context, deliver, header, scrub, section
from retail_platform.settings import Settings


def _run_url(ctx) -> str | None:
    ti = ctx.get("ti") or ctx.get("task_instance")
    return getattr(ti, "log_url", None)


class PlatformFailureNotifier(BaseNotifier):
    """A task failed after its retries: tell the DAG's owners (default_args on every DAG)."""

    def notify(self, context_):
        ti = context_["ti"]
        dag_id, task_id = ti.dag_id, ti.task_id
        error = context_.get("exception")
        if isinstance(error, ConsequentialFailure):
            return  # its cause upstream has already been reported
        owner = getattr(context_.get("task"), "owner", None)
        title = f"{dag_id}.{task_id} failed"
        text = f"*Task:* `{dag_id}.{task_id}` (map index {ti.map_index}) try {ti.try_number}\n" + (
            f"*Error:* {scrub(str(error))[:1500]}" if error else ""
        )
        url = _run_url(context_)
        blocks = [header(title), section(text)]
        if url:
            blocks.append(context(f"<{url}|Airflow log> · owner {owner}"))
        deliver(
            Alert(
                kind="task_failed",
                title=title,
                text=f"{title}\n{text}",
                blocks=blocks,
                details={
                    "dag_id": dag_id,
                    "task_id": task_id,
                    "run_id": context_.get("run_id"),
                    "owner": owner,
                },
            ),
            Settings.from_env(),
        )


class SourceOutageNotifier(BaseNotifier):
    """The replica did not answer after all retries: announce stale data once (until it recovers)."""

    def notify(self, context_):
        from retail_platform.extract.runner import report_source_outage

        error = context_.get("exception")
        reason = scrub(f"{type(error).__name__}: {error}") if error else "the source did not answer"
        report_source_outage(Settings.from_env(), reason, run_url=_run_url(context_))
