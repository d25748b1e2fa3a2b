"""The release page's sections for the drift check (table and an inline SVG plot) and for infra validation.

Rendered from the release record only; every data-derived text is escaped, and the plot is inline
SVG (no script, no remote resource: the page's Content-Security-Policy stays as it is).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

_BASELINE_FILL = "#adb5bd"
_DAY_FILL = "#f76707"
_PANEL_W, _PANEL_H = 250, 130


def _e(value: Any) -> str:
    return "—" if value is None else html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "—"


def _edge(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else ""


def _shares(counts: Sequence[float]) -> list[float]:
    total = math.fsum(counts)
    return [count / total if total else 0.0 for count in counts]


def _panel(title: str, baseline: Sequence[float], day: Sequence[float], moved: bool, axis: tuple[str, str]) -> str:
    """One small plot: the window's shares as grey bars, D's as orange bars over them."""
    base, mine = _shares(baseline), _shares(day)
    top = max([*base, *mine, 1e-9])
    plot_h, foot, width = _PANEL_H - 34, 14, _PANEL_W - 8
    step = width / max(1, len(mine))
    bars = []
    for index, (b, d) in enumerate(zip(base, mine, strict=True)):
        x = 4 + index * step
        for value, fill, inset in ((b, _BASELINE_FILL, 0.0), (d, _DAY_FILL, step * 0.25)):
            height = plot_h * value / top
            y = _PANEL_H - foot - height
            bars.append(
                f'<rect x="{x + inset:.1f}" y="{y:.1f}" width="{max(0.5, step - 2 * inset - 0.5):.1f}" '
                f'height="{height:.1f}" fill="{fill}" fill-opacity="0.85"/>'
            )
    color = "#c92a2a" if moved else "#1f2933"
    return (
        f'<svg class="drift-panel" width="{_PANEL_W}" height="{_PANEL_H}" viewBox="0 0 {_PANEL_W} {_PANEL_H}" '
        f'role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>'
        f'<text x="4" y="13" font-size="11" font-weight="600" fill="{color}">{_e(title)}</text>'
        + "".join(bars)
        + f'<line x1="4" x2="{_PANEL_W - 4}" y1="{_PANEL_H - foot}" y2="{_PANEL_H - foot}" stroke="#7b8794"/>'
        f'<text x="4" y="{_PANEL_H - 2}" font-size="10" fill="#7b8794">{_e(axis[0])}</text>'
        f'<text x="{_PANEL_W - 4}" y="{_PANEL_H - 2}" font-size="10" fill="#7b8794" text-anchor="end">'
        f"{_e(axis[1])}</text></svg>"
    )


def drift_plot(drift: Mapping[str, Any]) -> str:
    """Inline SVG small multiples: each feature's histogram and the label shares, window (grey) vs D (orange)."""
    panels = []
    for feature in drift.get("features") or []:
        low, high = (feature.get("day") or {}).get("range") or (None, None)
        title = f"{feature.get('name')}  JS {_num(feature.get('js'))}"
        panels.append(
            _panel(
                title,
                (feature.get("baseline") or {}).get("histogram") or [],
                (feature.get("day") or {}).get("histogram") or [],
                bool(feature.get("moved")),
                (_edge(low), _edge(high)),
            )
        )
    labels = drift.get("labels")
    if labels:
        keys = sorted(labels.get("day_shares") or {}, key=int)
        panels.append(
            _panel(
                f"label share  L∞ {_num(labels.get('linf'))}",
                [labels["baseline_shares"][key] for key in keys],
                [labels["day_shares"][key] for key in keys],
                bool(labels.get("moved")),
                (keys[0] if keys else "", keys[-1] if keys else ""),
            )
        )
    if not panels:
        return ""
    legend = (
        f'<p class="muted"><span style="color:{_BASELINE_FILL}">■</span> the window before D '
        f'<span style="color:{_DAY_FILL}">■</span> day D (shares per fixed bin)</p>'
    )
    return f'<div id="drift-plot">{"".join(panels)}{legend}</div>'


def drift_section(record: Mapping[str, Any]) -> list[str]:
    """`<h2>Drift check</h2>`: the verdict, what moved and by how much, and the plot."""
    drift = record.get("drift")
    out = ["<h2>Drift check</h2>"]
    if not drift:
        return [*out, '<p class="muted" id="drift">no drift check in this run</p>']
    status = str(drift.get("status"))
    css = "ok" if drift.get("passed") else "bad"
    out.append(
        f'<p id="drift" data-status="{_e(status)}" data-moved="{_e(",".join(drift.get("moved") or []))}">'
        f'<strong class="{css}">{_e(status.upper())}</strong> (action {_e(drift.get("action"))}, '
        f"window {_e(drift.get('window_days'))} days) — {_e(drift.get('summary'))}</p>"
    )
    features = drift.get("features") or []
    if features:
        out.append(
            '<table id="drift-table"><tr><th>Feature</th><th>JS divergence</th><th>Limit</th><th>Moved</th>'
            "<th>Mean (window → D)</th><th>Std (window → D)</th></tr>"
        )
        for feature in features:
            day, base = feature.get("day") or {}, feature.get("baseline") or {}
            moved = bool(feature.get("moved"))
            out.append(
                f'<tr data-feature="{_e(feature.get("name"))}" data-moved="{str(moved).lower()}">'
                f'<td>{_e(feature.get("name"))}</td><td class="num">{_num(feature.get("js"), 4)}</td>'
                f'<td class="num">{_num(feature.get("limit"), 4)}</td>'
                f'<td class="{"bad" if moved else "ok"}">{"MOVED" if moved else "no"}</td>'
                f'<td class="num">{_num(base.get("mean"))} → {_num(day.get("mean"))}</td>'
                f'<td class="num">{_num(base.get("std"))} → {_num(day.get("std"))}</td></tr>'
            )
        labels = drift.get("labels") or {}
        if labels:
            worst = str(labels.get("worst_label"))
            moved = bool(labels.get("moved"))
            before = (labels.get("baseline_shares") or {}).get(worst)
            after = (labels.get("day_shares") or {}).get(worst)
            out.append(
                f'<tr data-feature="label" data-moved="{str(moved).lower()}"><td>label share (L∞)</td>'
                f'<td class="num">{_num(labels.get("linf"), 4)}</td><td class="num">{_num(labels.get("limit"), 4)}</td>'
                f'<td class="{"bad" if moved else "ok"}">{"MOVED" if moved else "no"}</td>'
                f'<td class="num">label {_e(worst)}: {_num(before)} → {_num(after)}</td><td></td></tr>'
            )
        out.append("</table>")
        out.append(drift_plot(drift))
    unusable = drift.get("unusable_days") or {}
    if unusable:
        listed = "; ".join(f"{day}: {why}" for day, why in sorted(unusable.items()))
        out.append(f'<p class="muted" id="drift-unusable">days of the window left out: {_e(listed)}</p>')
    return out


def _reused(infra: Mapping[str, Any]) -> str:
    """The note for a rerun that stood on an earlier run's pass instead of starting a container."""
    if not infra.get("reused"):
        return ""
    note = f"recorded by run {_e(infra.get('run_id'))}: no container started"
    return f'<br><span class="muted" id="infra-reused">{note}</span>'


def infra_section(record: Mapping[str, Any]) -> list[str]:
    """`<h2>Infra validation</h2>`: the candidate in a throwaway TF Serving, check by check."""
    infra = record.get("infra_validation")
    out = ["<h2>Infra validation</h2>"]
    if not infra:
        return [*out, '<p class="muted" id="infra">no infra validation in this run</p>']
    passed = bool(infra.get("passed"))
    out.append(
        f'<p id="infra" data-passed="{str(passed).lower()}"><strong class="{"ok" if passed else "bad"}">'
        f"{'PASSED' if passed else 'FAILED'}</strong> — {_e(infra.get('reason'))}<br>"
        f'<span class="muted">image {_e(infra.get("image"))}, container {_e(infra.get("container"))}, '
        f"version {_e(infra.get('version'))}, seconds {_e(infra.get('seconds'))}</span>{_reused(infra)}</p>"
    )
    out.append('<table id="infra-checks"><tr><th>Check</th><th>Result</th><th>Observed</th><th>Expected</th></tr>')
    for check in infra.get("checks") or []:
        ok = bool(check.get("passed"))
        out.append(
            f'<tr data-check="{_e(check.get("name"))}" data-passed="{str(ok).lower()}"><td>{_e(check.get("name"))}</td>'
            f'<td class="{"ok" if ok else "bad"}">{"ok" if ok else "FAILED"}</td>'
            f"<td>{_e(check.get('observed'))}</td><td>{_e(check.get('limit'))}</td></tr>"
        )
    out.append("</table>")
    if infra.get("log_tail") and not passed:
        log_text = "\n".join(str(line) for line in infra["log_tail"])
        out.append(f'<pre id="infra-log">{_e(log_text)}</pre>')
    return out
