"""Slack-compatible alert payloads (`text` for notifications, `blocks` for the message body)."""

from __future__ import annotations

from typing import Any

UNKNOWN = "unknown"
_MAX_DETAIL = 2000  # Slack refuses text objects above 3000 characters


def build_alert(
    *,
    title: str,
    model: str | None,
    day: str | None,
    host: str | None,
    endpoint: str | None,
    file: str | None,
    check: str | None,
    detail: str,
    log_url: str | None,
    task: str | None = None,
) -> dict[str, Any]:
    """A webhook body naming model, D, host, endpoint, file, the failed check and the task's log URL."""
    facts = {
        "Model": model,
        "Day D": day,
        "Host": host,
        "Endpoint": endpoint,
        "File": file,
        "Failed check": check,
    }
    shown = {name: value or UNKNOWN for name, value in facts.items()}
    detail = detail if len(detail) <= _MAX_DETAIL else detail[: _MAX_DETAIL - 1] + "…"
    text = (
        f"{title}: model {shown['Model']}, D={shown['Day D']}, host {shown['Host']}, "
        f"endpoint {shown['Endpoint']}, file {shown['File']}, failed check {shown['Failed check']}"
        + (f", log {log_url}" if log_url else "")
    )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{name}*\n`{value}`"} for name, value in shown.items()],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": f"```{detail}```"}},
    ]
    context = [f"task {task}"] if task else []
    context.append(f"<{log_url}|task log>" if log_url else "no log URL")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    return {"text": text, "blocks": blocks}


def publish_failure_alert(error: Any, *, log_url: str | None, task: str | None = None) -> dict[str, Any]:
    """The alert for a failed publication, from a `PublishError` (its attributes name everything)."""
    return build_alert(
        title="tfship: model publication failed",
        model=getattr(error, "model", None),
        day=getattr(error, "day", None),
        host=getattr(error, "host", None),
        endpoint=getattr(error, "endpoint", None),
        file=getattr(error, "file", None),
        check=getattr(error, "check", None),
        detail=str(error),
        log_url=log_url,
        task=task,
    )
