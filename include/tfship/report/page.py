"""The release page on-call reads: what serves on each host now, the chosen run's release, recent runs.

A self-contained HTML page (inline CSS, no script) rendered from release records and the live
served state of each host; every data-derived text is escaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from tfship.constants import HostStatus
from tfship.report.record import CV_PLOT, TRAINING_PLOT, format_accuracy
from tfship.report.sections import drift_section, infra_section

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#1f2933;background:#fff}
h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;margin:4px 0 12px}th,td{border:1px solid #d9dee3;padding:4px 8px;text-align:left}
th{background:#f3f5f7;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.status{display:inline-block;white-space:nowrap;padding:1px 8px;border-radius:10px;font-weight:600;color:#fff;
background:#7b8794}
.status-released,.status-promoted{background:#2f9e44}.status-held{background:#b08900}.status-failed{background:#c92a2a}
.status-rolled-back{background:#d9480f}.ok{color:#2f9e44;font-weight:600}.bad{color:#c92a2a;font-weight:600}
.muted{color:#7b8794}.served{font-size:18px;font-weight:700}.drift td{background:#fff4e6}
.notes{background:#fff4e6;border:1px solid #ffd8a8;padding:6px 10px;margin:8px 0}
.summary{margin:4px 0 8px}code{font-size:12px}figure{display:inline-block;margin:0 16px 8px 0}
figure img{max-width:560px;border:1px solid #d9dee3}tr.selected td{background:#e7f5ff}
#history td:first-child{white-space:nowrap}
"""


def _e(value: Any) -> str:
    """HTML-escaped text of any value (None as an em dash)."""
    return "—" if value is None else html.escape(str(value), quote=True)


def _data(value: Any) -> str:
    """An attribute value where None is empty (a test reads `data-version=""` as "none")."""
    return "" if value is None else _e(value)


def _status_badge(status: Any, element_id: str | None = None) -> str:
    css = "status status-" + re.sub(r"[^a-z]+", "-", str(status).lower()).strip("-")
    ident = f' id="{_e(element_id)}"' if element_id else ""
    return f'<span{ident} class="{_e(css)}" data-status="{_e(status)}">{_e(status)}</span>'


def _delta(value: Any) -> str:
    if not isinstance(value, int | float):
        return '<span class="muted">—</span>'
    css = "ok" if value >= 0 else "bad"
    return f'<span class="{css}">{value:+.4f}</span>'


def _latency_keys(canaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Percentile columns in order (p50, p90, p95, p99, ..., max), whatever the verdicts hold."""
    keys = {key for canary in canaries for key in (canary.get("latency_ms") or {})}

    def order(key: str) -> tuple[int, float, str]:
        if key == "max":
            return (1, 0.0, key)
        try:
            return (0, float(key.removeprefix("p")), key)
        except ValueError:
            return (0, 1e9, key)

    return sorted(keys, key=order)


def _ms(value: Any) -> str:
    return f"{float(value):.1f}" if isinstance(value, int | float) else "—"


def _versions_text(record: Mapping[str, Any]) -> str:
    hosts = record.get("hosts") or []
    return ", ".join(f"{host.get('host')}={host.get('published_version') or '—'}" for host in hosts) or "—"


def _canary_text(record: Mapping[str, Any]) -> str:
    parts = []
    for host in record.get("hosts") or []:
        canary = host.get("canary")
        if canary is None:
            continue
        word = "passed" if canary.get("passed") else "FAILED " + ",".join(canary.get("failed_checks") or [])
        parts.append(f"{host.get('host')}: {word}")
    return "; ".join(parts) or "—"


def _served_section(hosts: Mapping[str, Mapping[str, Any]], records: Sequence[Mapping[str, Any]]) -> list[str]:
    # Which run published which version on which host: the digest and day of what serves now.
    by_version: dict[tuple[str, int], Mapping[str, Any]] = {}
    newest_released: dict[str, int] = {}
    for record in reversed(records):  # oldest first: a later record of the same version wins
        for entry in record.get("hosts") or []:
            version = entry.get("published_version")
            if isinstance(version, int):
                by_version[(entry.get("host"), version)] = record
    for record in records:
        for entry in record.get("hosts") or []:
            version = entry.get("published_version")
            if entry.get("status") == HostStatus.RELEASED and isinstance(version, int):
                newest_released.setdefault(entry.get("host"), version)
    out = [
        "<h2>Serving now</h2>",
        '<table id="serving"><tr><th>Host</th><th>Version</th><th>State</th><th>Labels</th><th>Day D</th>'
        "<th>Digest</th><th>Run</th></tr>",
    ]
    for host, state in hosts.items():
        version = state.get("version")
        record = by_version.get((host, version)) if isinstance(version, int) else None
        expected = newest_released.get(host)
        drift = isinstance(version, int) and expected is not None and version != expected
        error = state.get("error")
        state_text = _e(state.get("state"))
        if error:
            state_text += f'<br><span class="bad">{_e(error)}</span>'
        if drift:
            state_text += f'<br><span class="bad">newest released version is {_e(expected)}</span>'
        candidate = (record or {}).get("candidate") or {}
        digest = candidate.get("digest")
        out.append(
            f'<tr class="host{" drift" if drift else ""}" data-host="{_e(host)}">'
            f"<td>{_e(host)}</td>"
            f'<td id="served-{_e(host)}" class="served num" data-version="{_data(version)}">'
            f"{_e(version)}</td>"
            f"<td>{state_text}</td>"
            f'<td class="labels">{_labels_text(state.get("labels"))}</td>'
            f"<td>{_e((record or {}).get('day'))}</td>"
            f'<td><code title="{_e(digest)}">{_e(digest[:12] if isinstance(digest, str) else None)}</code></td>'
            f"<td>{_e((record or {}).get('run_id'))}</td></tr>"
        )
    if not hosts:
        out.append('<tr><td colspan="7" class="muted">no serving host configured</td></tr>')
    out.append("</table>")
    return out


def _release_section(record: Mapping[str, Any], artifact_url: Callable[[str, str], str], label: str) -> list[str]:
    candidate = record.get("candidate") or {}
    gate = record.get("gate")
    version = record.get("version")
    digest = candidate.get("digest")
    out = [
        f'<section id="release" data-run-id="{_e(record.get("run_id"))}" data-status="{_e(record.get("status"))}" '
        f'data-version="{_data(version)}">',
        f"<h2>{_e(label)} {_e(record.get('run_id'))} {_status_badge(record.get('status'), 'release-status')}</h2>",
        f'<p class="summary" id="release-summary">{_e(record.get("summary"))}</p>',
        "<table><tr><th>Day D</th><th>Version</th><th>Digest</th><th>Candidate</th></tr>",
        f'<tr><td>{_e(record.get("day"))}</td><td class="num" id="release-version">{_e(version)}</td>'
        f'<td><code id="release-digest">{_e(digest)}</code></td><td><code>{_e(candidate.get("path"))}</code></td></tr>'
        "</table>",
        "<h2>Metrics against the served version</h2>",
    ]
    if gate:
        served_label = f"served v{gate['served_version']}" if gate.get("served_version") is not None else "served"
        word = "FORCED" if gate.get("forced") else ("PUBLISH" if gate.get("publish") else "HOLD")
        out += [
            f'<table id="metrics"><tr><th>Candidate accuracy</th><th>{_e(served_label)} accuracy</th>'
            "<th>Delta</th><th>Eval loss</th></tr>",
            f'<tr><td class="num" id="candidate-accuracy">{format_accuracy(gate.get("candidate_accuracy"))}</td>'
            f'<td class="num" id="served-accuracy">{format_accuracy(gate.get("served_accuracy"))}</td>'
            f'<td class="num" id="accuracy-delta">{_delta(gate.get("accuracy_delta"))}</td>'
            f'<td class="num">{format_accuracy(candidate.get("eval_loss"))}</td></tr></table>',
            f'<p id="gate">Gate: <strong class="{"ok" if gate.get("publish") else "bad"}">{word}</strong> '
            f"— {_e(gate.get('reason'))}</p>",
        ]
    else:
        accuracy = format_accuracy(candidate.get("eval_accuracy"))
        out.append(f'<p id="gate" class="muted">no gate decision in this run (candidate accuracy {accuracy})</p>')
    out += drift_section(record) + infra_section(record)
    canaries = [(h, h["canary"]) for h in record.get("hosts") or [] if h.get("canary")]
    out.append("<h2>Canary</h2>")
    if canaries:
        keys = _latency_keys([canary for _, canary in canaries])
        out.append(
            '<table id="canary"><tr><th>Host</th><th>Version</th><th>Verdict</th><th>Accuracy</th>'
            "<th>Argmax agreement</th>" + "".join(f"<th>{_e(key)} ms</th>" for key in keys) + "</tr>"
        )
        for host, canary in canaries:
            passed = bool(canary.get("passed"))
            verdict = "PASSED" if passed else "FAILED " + ", ".join(canary.get("failed_checks") or [])
            if canary.get("rollback"):
                verdict += f" — rolled back, v{canary['rollback'].get('serving')} serves again"
            if canary.get("rollback_error"):
                verdict += f" — ROLLBACK FAILED: {canary['rollback_error']}"
            latency = canary.get("latency_ms") or {}
            out.append(
                f'<tr id="canary-{_e(host.get("host"))}" data-passed="{str(passed).lower()}">'
                f'<td>{_e(host.get("host"))}</td><td class="num">{_e(canary.get("version"))}</td>'
                f'<td class="{"ok" if passed else "bad"}">{_e(verdict)}</td>'
                f'<td class="num">{format_accuracy(canary.get("accuracy"))}</td>'
                f'<td class="num">{format_accuracy(canary.get("argmax_agreement"))}</td>'
                + "".join(f'<td class="num">{_ms(latency.get(key))}</td>' for key in keys)
                + "</tr>"
            )
        out.append("</table>")
    else:
        out.append('<p class="muted" id="canary">no canary verdict in this run</p>')
    out += _rollout_section(record)
    path = candidate.get("path")
    if path:
        out += [
            "<h2>Cross-validation and training</h2>",
            f'<figure><img id="cv-plot" src="{_e(artifact_url(path, CV_PLOT))}" alt="cross-validation results" '
            'loading="lazy"><figcaption>cross-validation (cv_results.png)</figcaption></figure>',
            f'<figure><img id="training-curves" src="{_e(artifact_url(path, TRAINING_PLOT))}" '
            'alt="training curves" loading="lazy"><figcaption>training curves (training.png)</figcaption></figure>',
        ]
    out.append("</section>")
    return out


def _labels_text(labels: Any) -> str:
    """`stable=v canary=v`, or an em dash."""
    if not isinstance(labels, Mapping) or not labels:
        return "—"
    return " ".join(f"{_e(name)}={_e(version)}" for name, version in sorted(labels.items()))


def _rollout_section(record: Mapping[str, Any]) -> list[str]:
    """The rolling release of the run: hosts in the order they went, where each ended, its labels and memory."""
    hosts = sorted(
        (h for h in record.get("hosts") or [] if h.get("rollout")), key=lambda h: h["rollout"].get("order") or 0
    )
    if not hosts:
        return []
    out = [
        "<h2>Rollout</h2>",
        '<table id="rollout"><tr><th>#</th><th>Host</th><th>Step</th><th>Labels after</th><th>Previous</th>'
        "<th>Memory peak (MB, two versions)</th><th>Drained</th><th>Why</th></tr>",
    ]
    for host in hosts:
        rollout = host["rollout"]
        memory = rollout.get("memory") or {}
        out.append(
            f'<tr id="rollout-{_e(host.get("host"))}" data-step="{_e(rollout.get("step"))}">'
            f'<td class="num">{_e(rollout.get("order"))}</td><td>{_e(host.get("host"))}</td>'
            f"<td>{_status_badge(rollout.get('step'))}</td><td>{_labels_text(rollout.get('labels'))}</td>"
            f'<td class="num">{_e(rollout.get("previous"))}</td>'
            f'<td class="num">{_e(memory.get("peak_mb"))} of {_e(memory.get("limit_mb"))}</td>'
            f"<td>{'yes' if rollout.get('drained') else 'no'}</td><td>{_e(rollout.get('reason') or '')}</td></tr>"
        )
    out.append("</table>")
    return out


def _history_section(model: str, records: Sequence[Mapping[str, Any]], selected: str | None) -> list[str]:
    out = [
        "<h2>Recent runs</h2>",
        '<table id="history"><tr><th>Day D</th><th>Run</th><th>Status</th><th>Versions</th>'
        "<th>Candidate acc.</th><th>Served acc.</th><th>Delta</th><th>Canary</th></tr>",
    ]
    for record in records:
        gate = record.get("gate") or {}
        candidate = record.get("candidate") or {}
        run_id = record.get("run_id")
        version = record.get("version")
        link = "?" + "&amp;".join(
            f"{key}={_e(quote(value, safe=''))}" for key, value in (("model", model), ("run_id", str(run_id)))
        )
        css = "run selected" if run_id == selected else "run"
        out.append(
            f'<tr class="{css}" data-run-id="{_e(run_id)}" data-day="{_e(record.get("day"))}" '
            f'data-status="{_e(record.get("status"))}" data-version="{_data(version)}">'
            f'<td>{_e(record.get("day"))}</td><td><a href="{link}">{_e(run_id)}</a></td>'
            f"<td>{_status_badge(record.get('status'))}</td><td>{_e(_versions_text(record))}</td>"
            f'<td class="num">{format_accuracy(gate.get("candidate_accuracy", candidate.get("eval_accuracy")))}</td>'
            f'<td class="num">{format_accuracy(gate.get("served_accuracy"))}</td>'
            f'<td class="num">{_delta(gate.get("accuracy_delta"))}</td><td>{_e(_canary_text(record))}</td></tr>'
        )
    if not records:
        out.append('<tr><td colspan="8" class="muted">no release recorded yet</td></tr>')
    out.append("</table>")
    return out


def render_release_page(
    model: str,
    records: Sequence[Mapping[str, Any]],
    served_by_host: Mapping[str, Mapping[str, Any]],
    artifact_url: Callable[[str, str], str],
    *,
    selected_run_id: str | None = None,
    notes: Sequence[str] = (),
) -> str:
    """A self-contained HTML page (inline CSS, no script): serving now, the focused run, recent runs."""
    focus = next((r for r in records if selected_run_id and r.get("run_id") == selected_run_id), None)
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tfship releases: {_e(model)}</title>",
        f"<style>{_CSS}</style></head>",
        f'<body data-model="{_e(model)}">',
        f'<h1>Releases of model <span id="model">{_e(model)}</span></h1>',
    ]
    if notes:
        lines.append('<div class="notes" id="notes"><strong>Not shown:</strong><ul>')
        lines += [f"<li>{_e(note)}</li>" for note in notes]
        lines.append("</ul></div>")
    if selected_run_id and focus is None:
        lines.append(
            f'<div class="notes" id="run-missing">no release record for run {_e(selected_run_id)} '
            "(the report task has not run yet, or the run is older than the history shown)</div>"
        )
    lines += _served_section(served_by_host, records)
    label = "Selected run" if focus is not None else "Latest run"
    focus = focus or (records[0] if records else None)
    if focus is not None:
        lines += _release_section(focus, artifact_url, label)
    lines += _history_section(model, records, selected_run_id)
    lines.append("</body></html>")
    return "\n".join(lines)
