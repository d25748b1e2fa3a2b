"""The release record of one daily run and the page on-call reads: what serves where, and why.

`release_record` turns what the run's tasks returned (training result, gate decision, and per
serving host the published version, the deploy result and the canary verdict) into one
JSON-ready dict with a `status`. Records live at `releases/<model>/<D>/<run-slug>.json`
on the storage root; `render_release_page` makes a self-contained HTML page of them.
"""

from __future__ import annotations

import html
import json
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from tfship.days import parse_day
from tfship.errors import ConfigError, PathEscapeError, StorageError
from tfship.paths import check_name, model_releases_dir, normalize_relative, release_record_path
from tfship.storage import Storage

SCHEMA_VERSION = 1
# The candidate files the page shows or links; anything else in a candidate stays private.
ARTIFACT_FILES = frozenset(
    {"cv_results.png", "training.png", "metrics.json", "canary.json", "cv_results.json", "MANIFEST.json"}
)
CV_PLOT = "cv_results.png"
TRAINING_PLOT = "training.png"

RELEASED, HELD, FAILED, ROLLED_BACK = "released", "held", "failed", "rolled back"
SUPERSEDED = "superseded"  # a host already held a later day's version: this run left it alone
MAX_HTTP_ERRORS = 5  # a dead server fails every batch: the first few say enough


# ---------------------------------------------------------------- the record


def _as_version(value: Any) -> int | None:
    """A published version from XCom (int, or a rendered string); anything else means none."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _aligned(values: Sequence[Any] | None, count: int) -> list[Any]:
    """One entry per host: missing trailing entries (a copy that never ran) become None."""
    values = list(values or [])
    return (values + [None] * count)[:count]


def _candidate(train: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not train:
        return None
    return {
        "path": train.get("candidate"),
        "uri": train.get("candidate_uri"),
        "digest": train.get("digest"),
        "reused": train.get("reused"),
        "eval_accuracy": train.get("eval_accuracy"),
        "eval_loss": train.get("eval_loss"),
    }


def _gate(decision: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not decision:
        return None
    gate = {
        key: decision.get(key)
        for key in ("publish", "reason", "candidate_accuracy", "served_accuracy", "served_version", "forced")
    }
    candidate, served = gate["candidate_accuracy"], gate["served_accuracy"]
    gate["accuracy_delta"] = (
        round(float(candidate) - float(served), 6) if candidate is not None and served is not None else None
    )
    return gate


def _canary(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not record:
        return None
    canary = {key: value for key, value in record.items() if key not in ("host", "run_id")}
    errors = list(canary.get("http_errors") or [])
    if len(errors) > MAX_HTTP_ERRORS:
        canary["http_errors"] = [*errors[:MAX_HTTP_ERRORS], f"... {len(errors) - MAX_HTTP_ERRORS} more"]
    return canary


def _host_status(
    published: int | None, deploy: Any, canary: Mapping[str, Any] | None, superseded: str | None = None
) -> str:
    """What happened on one host, in the words of the page."""
    if superseded:
        return SUPERSEDED
    if canary is not None:
        if canary.get("passed"):
            return RELEASED
        if canary.get("rollback_error"):
            return "rollback failed"
        return ROLLED_BACK if canary.get("rollback") else "canary failed"
    if published is None:
        return "not published"
    if deploy is None:
        return "not deployed"
    return "no canary"


def _summary(status: str, hosts: list[dict[str, Any]], version: int | None, gate: dict[str, Any] | None) -> str:
    if status == HELD:
        return f"held by the gate: {gate['reason'] if gate else '?'}"
    names = ", ".join(host["host"] for host in hosts)
    if status == RELEASED:
        forced = " (FORCED past the gate)" if gate and gate.get("forced") else ""
        return f"version {version} released to {names}: canary passed{forced}"
    parts = []
    for host in hosts:
        if host["status"] == RELEASED:
            continue
        canary = host["canary"] or {}
        checks = ", ".join(canary.get("failed_checks") or [])
        if host["status"] == ROLLED_BACK:
            serving = (canary.get("rollback") or {}).get("serving")
            parts.append(f"canary failed on {host['host']} ({checks}): rolled back, version {serving} serves again")
        elif host["status"] == "rollback failed":
            parts.append(f"canary failed on {host['host']} ({checks}) and the rollback failed")
        elif host["status"] == "canary failed":
            parts.append(f"canary failed on {host['host']} ({checks})")
        else:
            parts.append(f"{host['host']}: {host['status']}")
    return "; ".join(parts)


def release_record(
    *,
    model: str,
    day: str,
    run_id: str,
    hosts: Sequence[str],
    train: Mapping[str, Any] | None,
    decision: Mapping[str, Any] | None,
    published: Sequence[Any] | None = None,
    deploys: Sequence[Mapping[str, Any] | None] | None = None,
    canaries: Sequence[Mapping[str, Any] | None] | None = None,
    dag_id: str | None = None,
    superseded: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """The JSON-ready record of one run; per-host sequences follow `hosts`, a missing piece is None."""
    check_name("model", model)
    day = parse_day(day).isoformat()
    hosts = [str(host) for host in hosts]
    versions = [_as_version(value) for value in _aligned(published, len(hosts))]
    deploy_list = _aligned(deploys, len(hosts))
    canary_list = [_canary(record) for record in _aligned(canaries, len(hosts))]
    superseded_list = _aligned(superseded, len(hosts))
    candidate, gate = _candidate(train), _gate(decision)
    held = gate is not None and not gate["publish"]
    host_entries = [
        {
            "host": host,
            "published_version": version,
            "deploy": dict(deploy) if deploy else None,
            "canary": canary,
            "status": "skipped" if held else _host_status(version, deploy, canary, newer),
            **({"superseded": newer} if newer and not held else {}),
        }
        for host, version, deploy, canary, newer in zip(
            hosts, versions, deploy_list, canary_list, superseded_list, strict=True
        )
    ]
    published_versions = [v for v in versions if v is not None]
    version = max(published_versions) if published_versions else None
    if candidate is None:
        status, summary = FAILED, "no training result: train failed or did not run"
    elif gate is None:
        status, summary = FAILED, "no gate decision: evaluate failed or did not run"
    elif held:
        status = HELD
        summary = _summary(status, host_entries, version, gate)
    elif not host_entries:
        status, summary = FAILED, "the gate said publish but there is no serving host"
    else:
        states = {entry["status"] for entry in host_entries}
        if states == {SUPERSEDED}:
            # A later day's version got out first (an overlapping backfill): nothing older was served.
            status, summary = HELD, "superseded: " + "; ".join(f"{e['host']}: {e['superseded']}" for e in host_entries)
        elif states == {RELEASED}:
            status = RELEASED
        elif states <= {RELEASED, ROLLED_BACK}:
            status = ROLLED_BACK
        else:
            status = FAILED
        if states != {SUPERSEDED}:
            summary = _summary(status, host_entries, version, gate)
    return {
        "schema": SCHEMA_VERSION,
        "model": model,
        "day": day,
        "run_id": run_id,
        "dag_id": dag_id,
        "status": status,
        "summary": summary,
        "version": version,
        "candidate": candidate,
        "gate": gate,
        "hosts": host_entries,
    }


def canary_from_release_log(text: str, *, run_id: str, version: int | None = None) -> dict[str, Any] | None:
    """The last canary event of a run in a `releases.jsonl` text (a failed canary returns no XCom)."""
    found = None
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a torn line from a killed writer
        if not isinstance(event, dict) or event.get("event") != "canary" or event.get("run_id") != run_id:
            continue
        if version is not None and _as_version(event.get("version")) != version:
            continue
        found = {key: value for key, value in event.items() if key not in ("event", "recorded_at")}
    return found


def render_release_text(record: Mapping[str, Any]) -> str:
    """A few readable lines for the task log."""
    lines = [
        f"release of model {record.get('model')} for day {record.get('day')}, run {record.get('run_id')}: "
        f"{str(record.get('status')).upper()}",
        f"  {record.get('summary')}",
    ]
    gate = record.get("gate")
    if gate:
        served = gate.get("served_accuracy")
        against = (
            f" vs served v{gate.get('served_version')} {served:.4f} ({gate.get('accuracy_delta'):+.4f})"
            if isinstance(served, int | float)
            else " (nothing served to compare with)"
        )
        lines.append(f"  candidate accuracy {_accuracy(gate.get('candidate_accuracy'))}{against}")
    for host in record.get("hosts") or []:
        canary = host.get("canary") or {}
        latency = canary.get("latency_ms") or {}
        p99 = f", canary p99 {latency['p99']} ms" if "p99" in latency else ""
        lines.append(f"  {host.get('host')}: {host.get('status')}, published {host.get('published_version')}{p99}")
    return "\n".join(lines)


# ---------------------------------------------------------------- storage


def write_release_record(storage: Storage, record: Mapping[str, Any]) -> str:
    """Write the record atomically to its path (a rerun of the run overwrites it); return the path."""
    path = release_record_path(record["model"], record["day"], record["run_id"])
    data = json.dumps(record, indent=2, sort_keys=True, default=str).encode("utf-8")
    with storage.open_write(path) as handle:
        handle.write(data)
    return path


@dataclass(frozen=True)
class ReleaseHistory:
    """Records newest first, and the files that could not be read (never a crash)."""

    records: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)


def _order(record: Mapping[str, Any]) -> tuple[str, int, str]:
    version = record.get("version")
    return (str(record.get("day") or ""), version if isinstance(version, int) else -1, str(record.get("run_id")))


def read_release_records(storage: Storage, model: str, limit: int = 30) -> ReleaseHistory:
    """The newest `limit` records of a model (by day, then version, then run id); unreadable files are noted."""
    base = model_releases_dir(model)
    if limit < 1 or not storage.is_dir(base):
        return ReleaseHistory([])
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    # Day directories newest first: whole days are read until the limit is reached (sorting is by day first).
    for day in sorted(storage.list(base), reverse=True):
        if len(records) >= limit:
            break
        day_dir = posixpath.join(base, day)
        try:
            names = storage.list(day_dir)
        except StorageError:
            continue  # a stray file next to the day directories
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue  # a writer's temporary file
            path = posixpath.join(day_dir, name)
            try:
                with storage.open_read(path) as handle:
                    record = json.loads(handle.read().decode("utf-8"))
            except (OSError, ValueError) as err:
                skipped.append(f"{path}: {type(err).__name__}: {err}")
                continue
            if not isinstance(record, dict) or not {"run_id", "day", "status"} <= set(record):
                skipped.append(f"{path}: not a release record")
                continue
            records.append(record)
    records.sort(key=_order, reverse=True)
    return ReleaseHistory(records[:limit], skipped)


_CANDIDATE_NAME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9a-f]{8}$")


def candidate_artifact_path(candidate: str, file_name: str) -> str:
    """`<candidate>/<file>` for a page artifact; refuses any path but `models/<m>/candidates/<D>-<digest8>`."""
    if file_name not in ARTIFACT_FILES:
        allowed = ", ".join(sorted(ARTIFACT_FILES))
        raise ConfigError(f"{file_name!r} is not an artifact the release view shows ({allowed})")
    if ".." in candidate.split("/"):
        raise PathEscapeError(f"candidate {candidate!r} contains '..'")
    parts = normalize_relative(candidate).split("/")
    if len(parts) != 4 or parts[0] != "models" or parts[2] != "candidates" or not _CANDIDATE_NAME.match(parts[3]):
        raise ConfigError(f"{candidate!r} is not a candidate directory (models/<model>/candidates/<D>-<digest8>)")
    check_name("model", parts[1])
    return posixpath.join(*parts, file_name)


# ---------------------------------------------------------------- live serving state


def served_state(status_code: int, body: Mapping[str, Any]) -> dict[str, Any]:
    """From TF Serving's `GET /v1/models/<m>` answer: the version it serves (highest AVAILABLE) and its state."""
    if status_code != 200:
        return {"version": None, "state": f"HTTP {status_code}", "error": str(body.get("error", body))[:300]}
    entries = [entry for entry in body.get("model_version_status") or [] if isinstance(entry, dict)]
    available = [_as_version(e.get("version")) for e in entries if e.get("state") == "AVAILABLE"]
    available = [v for v in available if v is not None]
    if available:
        return {"version": max(available), "state": "AVAILABLE", "error": None}
    if not entries:
        return {"version": None, "state": "NO VERSION", "error": None}
    newest = max(entries, key=lambda e: _as_version(e.get("version")) or -1)
    message = (newest.get("status") or {}).get("error_message") or None
    return {"version": None, "state": f"{newest.get('state')} v{newest.get('version')}", "error": message}


# ---------------------------------------------------------------- the page

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#1f2933;background:#fff}
h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;margin:4px 0 12px}th,td{border:1px solid #d9dee3;padding:4px 8px;text-align:left}
th{background:#f3f5f7;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.status{display:inline-block;white-space:nowrap;padding:1px 8px;border-radius:10px;font-weight:600;color:#fff;
background:#7b8794}
.status-released{background:#2f9e44}.status-held{background:#b08900}.status-failed{background:#c92a2a}
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


def _accuracy(value: Any) -> str:
    return f"{float(value):.4f}" if isinstance(value, int | float) else "—"


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
            if entry.get("status") == RELEASED and isinstance(version, int):
                newest_released.setdefault(entry.get("host"), version)
    out = [
        "<h2>Serving now</h2>",
        '<table id="serving"><tr><th>Host</th><th>Version</th><th>State</th><th>Day D</th><th>Digest</th>'
        "<th>Run</th></tr>",
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
            f"<td>{_e((record or {}).get('day'))}</td>"
            f'<td><code title="{_e(digest)}">{_e(digest[:12] if isinstance(digest, str) else None)}</code></td>'
            f"<td>{_e((record or {}).get('run_id'))}</td></tr>"
        )
    if not hosts:
        out.append('<tr><td colspan="6" class="muted">no serving host configured</td></tr>')
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
            f'<tr><td class="num" id="candidate-accuracy">{_accuracy(gate.get("candidate_accuracy"))}</td>'
            f'<td class="num" id="served-accuracy">{_accuracy(gate.get("served_accuracy"))}</td>'
            f'<td class="num" id="accuracy-delta">{_delta(gate.get("accuracy_delta"))}</td>'
            f'<td class="num">{_accuracy(candidate.get("eval_loss"))}</td></tr></table>',
            f'<p id="gate">Gate: <strong class="{"ok" if gate.get("publish") else "bad"}">{word}</strong> '
            f"— {_e(gate.get('reason'))}</p>",
        ]
    else:
        accuracy = _accuracy(candidate.get("eval_accuracy"))
        out.append(f'<p id="gate" class="muted">no gate decision in this run (candidate accuracy {accuracy})</p>')
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
                f'<td class="num">{_accuracy(canary.get("accuracy"))}</td>'
                f'<td class="num">{_accuracy(canary.get("argmax_agreement"))}</td>'
                + "".join(f'<td class="num">{_ms(latency.get(key))}</td>' for key in keys)
                + "</tr>"
            )
        out.append("</table>")
    else:
        out.append('<p class="muted" id="canary">no canary verdict in this run</p>')
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
            f'<td class="num">{_accuracy(gate.get("candidate_accuracy", candidate.get("eval_accuracy")))}</td>'
            f'<td class="num">{_accuracy(gate.get("served_accuracy"))}</td>'
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
        lines.append(f'<div class="notes" id="run-missing">no release record for run {_e(selected_run_id)} '
                     "(the report task has not run yet, or the run is older than the history shown)</div>")  # fmt: skip
    lines += _served_section(served_by_host, records)
    label = "Selected run" if focus is not None else "Latest run"
    focus = focus or (records[0] if records else None)
    if focus is not None:
        lines += _release_section(focus, artifact_url, label)
    lines += _history_section(model, records, selected_run_id)
    lines.append("</body></html>")
    return "\n".join(lines)
