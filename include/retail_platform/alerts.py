"""Alerts: Slack (Block Kit over an incoming webhook) when configured, otherwise the log and a file.

Slack goes through the Airflow Slack provider's ``SlackWebhookHook`` and the connection
``slack_alerts`` (AIRFLOW_CONN_SLACK_ALERTS). The webhook URL is a secret: the hook is
built without retry handlers (the Slack SDK's retry handler logs the full URL on
connection errors) and delivery errors are re-raised with any URL scrubbed.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from retail_platform.connections import ConnectionNotConfigured, conn_env_var, lookup_connection
from retail_platform.errors import ConfigurationError
from retail_platform.settings import Settings

log = logging.getLogger(__name__)
SLACK_CONN_ID = "slack_alerts"
# Web addresses (a webhook URL is a secret) and credentials in connection URLs (scheme://user:pass@).
_URL = re.compile(r"https?://\S+|\b[a-z][a-z0-9+.-]*://[^/\s:@]*:[^@\s]*@\S*", re.IGNORECASE)


class AlertDeliveryError(RuntimeError):
    pass


@dataclass
class Alert:
    kind: str  # e.g. schema_change, source_outage, source_recovered, task_failed
    title: str
    text: str  # plain-text fallback (notifications, logs)
    blocks: list[dict] = field(default_factory=list)
    channel: str | None = None  # the channel the message is meant for (routing is the webhook's)
    details: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @classmethod
    def message(
        cls,
        kind: str,
        title: str,
        text: str,
        *,
        link: str | None = None,
        link_label: str = "Airflow log",
        channel: str | None = None,
        details: dict | None = None,
    ) -> Alert:
        """The usual message: a header, the text, and a link to the run when there is one."""
        blocks = [header(title), section(text)]
        if link:
            blocks.append(context(f"<{link}|{link_label}>"))
        return cls(kind, title, f"{title}\n{text}", blocks, channel, details or {})


SLACK_TIMEOUT_S = (
    10  # a webhook that hangs fails the delivery (retried by its task), never the caller's deadline
)


def slack_configured(conn_id: str = SLACK_CONN_ID) -> bool:
    """Whether the Slack connection exists (environment, metadata database or secrets backends).

    A malformed one counts as missing, loudly: alerts still reach the log and the file."""
    try:
        lookup_connection(conn_id)
    except ConnectionNotConfigured:
        return False
    except ConfigurationError as exc:
        log.error("the Slack connection is unusable (%s): alerts go to the log and the alerts file", exc)
        return False
    return True


def scrub(text: str) -> str:
    return _URL.sub("<url redacted>", text)


def _send_slack(alert: Alert, settings: Settings, conn_id: str = SLACK_CONN_ID) -> None:
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    # A webhook that hangs fails the delivery (its task retries it) rather than the task's deadline.
    hook = SlackWebhookHook(
        slack_webhook_conn_id=conn_id, retry_handlers=[], timeout=settings.slack_timeout_s
    )
    try:
        hook.send(text=alert.text, blocks=alert.blocks or None)
    except Exception as exc:  # the original message may carry the webhook URL
        raise AlertDeliveryError(f"Slack delivery failed: {type(exc).__name__}: {scrub(str(exc))}") from None


def deliver(alert: Alert, settings: Settings | None = None, *, conn_id: str = SLACK_CONN_ID) -> str:
    """Send an alert; returns where it went ('slack' or the file's path).

    ``conn_id``: the Slack webhook connection of the audience (marketing has a channel of its own)."""
    settings = settings or Settings.from_env()
    if slack_configured(conn_id):
        _send_slack(alert, settings, conn_id)
        log.info("alert sent to Slack: %s", alert.title)
        return "slack"
    path = settings.alerts_file
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(asdict(alert), default=str) + "\n")
    log.warning(
        "no Slack connection (%s unset): alert written to %s and this log:\n%s",
        conn_env_var(conn_id),
        path,
        alert.text,
    )
    return str(path)


def read_alerts(settings: Settings | None = None) -> list[dict]:
    settings = settings or Settings.from_env()
    if not settings.alerts_file.exists():
        return []
    return [
        json.loads(line) for line in settings.alerts_file.read_text(encoding="utf-8").splitlines() if line
    ]


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}
