"""The release record's and page's drift and infra validation parts, and the gate's drift hold."""

from __future__ import annotations

import json
import re

from tfship.release.gate import GateDecision, decide, hold_for_drift
from tfship.report.page import render_release_page
from tfship.report.record import release_record, render_release_text

RUN = "manual__2026-11-04T10:00:00+00:00"
CANDIDATE = "models/mnist/candidates/2026-11-04-0123abcd"
TRAIN = {
    "candidate": CANDIDATE,
    "candidate_uri": f"file:///srv/{CANDIDATE}",
    "digest": "0123abcd" + "e" * 24,
    "reused": True,
    "eval_accuracy": 0.95,
    "eval_loss": 0.2,
}
BINS = 32


def _feature(name: str, js: float, limit: float = 0.1) -> dict:
    day = {"count": 900, "mean": 40.0, "std": 5.0, "range": [0.0, 255.0], "histogram": [0] * 4 + [900] + [0] * 27}
    base = {"count": 3000, "mean": 30.0, "std": 5.0, "range": [0.0, 255.0], "histogram": [0] * 3 + [3000] + [0] * 28}
    return {"name": name, "js": js, "limit": limit, "moved": js > limit, "day": day, "baseline": base}


def _drift(status: str, action: str = "hold", moved: tuple[str, ...] = ()) -> dict:
    features = [_feature("mean_brightness", 0.9 if "mean_brightness" in moved else 0.01), _feature("contrast", 0.02)]
    shares = {str(k): 0.1 for k in range(10)}
    labels = {
        "linf": 0.1 if "label" in moved else 0.01,
        "limit": 0.05,
        "worst_label": "3",
        "moved": "label" in moved,
        "day_shares": {**shares, "3": 0.0},
        "baseline_shares": shares,
    }
    return {
        "dataset": "mnist",
        "day": "2026-11-04",
        "status": status,
        "action": action,
        "window_days": 7,
        "baseline_days": ["2026-11-01", "2026-11-02"],
        "features": features,
        "labels": labels,
        "unusable_days": {"2026-10-30": "no complete features partition"},
        "moved": list(moved),
        "passed": status != "drifted",
        "summary": f"drift against 2 earlier day(s): {', '.join(moved)} <b>",
    }


def _infra(passed: bool) -> dict:
    checks = [
        {"name": "stage", "passed": True, "observed": "digest 0123", "limit": "every file matches MANIFEST.json"},
        {"name": "load", "passed": passed, "observed": "loaded" if passed else "no variables <x>", "limit": "loads"},
    ]
    return {
        "model": "mnist",
        "candidate": CANDIDATE,
        "image": "tfship/tfserving-standin:abc",
        "container": "tfship-infra-mnist-2026-11-04-0123abcd",
        "version": 2026110400,
        "checks": checks,
        "passed": passed,
        "failed_checks": [] if passed else ["load"],
        "reason": "passed: 2 checks" if passed else "load failed: no variables <x> (expected loads)",
        "seconds": {"total": 30.0},
        "log_tail": [f"line {n}" for n in range(30)],
    }


def test_gate_holds_on_a_drift_hold_even_when_forced_and_not_otherwise():
    forced = decide(0.5, 0.9, served_version=2026110300, tolerance=0.01, floor=0.9, force=True)
    held = hold_for_drift(forced, _drift("drifted", "hold", ("label",)))
    assert held.publish is False and not held.forced
    assert held.reason.startswith("held by the drift check: drift against 2 earlier day(s): label")
    good = GateDecision(True, "fine", 0.95, None, None, False)
    assert hold_for_drift(good, _drift("passed")) is good
    assert hold_for_drift(good, _drift("no history")) is good
    assert hold_for_drift(good, None) is good
    assert hold_for_drift(good, _drift("drifted", "fail", ("label",))) is good  # fail stops the run instead


def test_record_of_a_run_held_by_drift_says_why_and_keeps_its_keys():
    drift = _drift("drifted", "hold", ("label",))
    decision = hold_for_drift(GateDecision(True, "fine", 0.95, None, None, False), drift).to_dict()
    record = release_record(
        model="mnist", day="2026-11-04", run_id=RUN, hosts=["local"], train=TRAIN, decision=decision, drift=drift
    )
    assert record["status"] == "held"
    assert record["summary"] == f"held by the drift check: {drift['summary']}"
    assert [host["status"] for host in record["hosts"]] == ["skipped"]
    assert record["drift"]["moved"] == ["label"] and record["infra_validation"] is None
    old_keys = {"schema", "model", "day", "run_id", "dag_id", "status", "summary", "version", "candidate", "gate"}
    assert old_keys | {"hosts", "drift", "infra_validation"} == set(record)
    assert "drift check: DRIFTED" in render_release_text(record)


def test_record_of_a_run_stopped_by_drift_and_of_a_failed_infra_validation():
    stopped = release_record(
        model="mnist",
        day="2026-11-04",
        run_id=RUN,
        hosts=["local"],
        train=None,
        decision=None,
        drift=_drift("drifted", "fail", ("mean_brightness",)),
    )
    assert stopped["status"] == "failed" and stopped["summary"].startswith("stopped by the drift check: drift")
    publish = GateDecision(True, "fine", 0.95, None, None, False).to_dict()
    failed = release_record(
        model="mnist",
        day="2026-11-04",
        run_id=RUN,
        hosts=["local"],
        train=TRAIN,
        decision=publish,
        drift=_drift("passed"),
        infra=_infra(False),
    )
    assert failed["status"] == "failed"
    reason = "load failed: no variables <x> (expected loads)"
    assert failed["summary"] == f"infra validation failed, nothing was published: {reason}"
    assert [host["status"] for host in failed["hosts"]] == ["not published"]
    assert failed["infra_validation"]["log_tail"] == [f"line {n}" for n in range(20, 30)]
    assert "infra validation: FAILED" in render_release_text(failed)


def _page(record: dict) -> str:
    return render_release_page("mnist", [record], {}, lambda candidate, name: f"/a?{name}", selected_run_id=RUN)


def test_page_shows_the_drift_verdict_table_plot_and_the_infra_checks_escaped():
    publish = GateDecision(True, "fine", 0.95, None, None, False).to_dict()
    record = release_record(
        model="mnist",
        day="2026-11-04",
        run_id=RUN,
        hosts=["local"],
        train=TRAIN,
        decision=publish,
        drift=_drift("drifted", "fail", ("mean_brightness", "label")),
        infra=_infra(False),
    )
    page = _page(json.loads(json.dumps(record)))
    assert 'id="drift" data-status="drifted" data-moved="mean_brightness,label"' in page
    assert '<tr data-feature="mean_brightness" data-moved="true">' in page
    assert '<tr data-feature="contrast" data-moved="false">' in page
    assert '<tr data-feature="label" data-moved="true"><td>label share (L∞)</td>' in page
    assert "label 3: 0.100 → 0.000" in page and "30.000 → 40.000" in page
    # One inline SVG panel per feature plus the labels: bars for the window and for D, no script.
    assert page.count('<svg class="drift-panel"') == 3
    assert "<script" not in page and "<b>" not in page and "&lt;b&gt;" in page
    assert "2026-10-30: no complete features partition" in page
    assert '<p id="infra" data-passed="false">' in page
    assert '<tr data-check="load" data-passed="false">' in page and "no variables &lt;x&gt;" in page
    assert re.search(r'<pre id="infra-log">line 20\n.*line 29</pre>', page, re.S)


def test_page_says_when_neither_check_ran():
    page = _page(
        release_record(model="mnist", day="2026-11-04", run_id=RUN, hosts=["local"], train=None, decision=None)
    )
    assert "no drift check in this run" in page and "no infra validation in this run" in page
