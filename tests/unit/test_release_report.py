"""The release record, its storage and the page, checked against hand-written expectations."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tfship.constants import LogEvent
from tfship.errors import ConfigError, PathEscapeError
from tfship.paths import release_record_path
from tfship.release.serving_dir import ReleaseLog
from tfship.report.page import render_release_page
from tfship.report.record import (
    candidate_artifact_path,
    read_release_records,
    release_record,
    render_release_text,
    write_release_record,
)
from tfship.serving.client import served_state
from tfship.storage import LocalStorage

RUN = "scheduled__2026-03-04T00:00:00+00:00"
CANDIDATE = "models/mnist/candidates/2026-03-04-0123abcd"
TRAIN = {
    "candidate": CANDIDATE,
    "candidate_uri": f"file:///srv/storage/{CANDIDATE}",
    "digest": "0123abcd" + "e" * 24,
    "reused": False,
    "eval_accuracy": 0.9712,
    "eval_loss": 0.0931,
}
PUBLISH = {
    "publish": True,
    "reason": "accuracy 0.9712 >= floor 0.9000; >= served v2026030300 0.9650 - tolerance 0.0050",
    "candidate_accuracy": 0.9712,
    "served_accuracy": 0.9650,
    "served_version": 2026030300,
    "forced": False,
}
HOLD = {
    "publish": False,
    "reason": "accuracy 0.8000 < floor 0.9000; < served v2026030300 0.9650 - tolerance 0.0050",
    "candidate_accuracy": 0.8,
    "served_accuracy": 0.9650,
    "served_version": 2026030300,
    "forced": False,
}
DEPLOY = {"version": 2026030400, "image": "tensorflow/serving:2.20.0", "url": "http://127.0.0.1:8501", "action": "kept"}


def canary(host: str, passed: bool = True, **extra) -> dict:
    """A record as CanaryServingOperator returns it (host, run_id, then the verdict)."""
    return {
        "host": host,
        "run_id": RUN,
        "model": "mnist",
        "version": 2026030400,
        "url": f"http://{host}:8501/v1/models/mnist/versions/2026030400",
        "rows": 256,
        "batches": 8,
        "concurrency": 4,
        "checks": [],
        "accuracy": 0.97 if passed else 0.41,
        "argmax_agreement": 1.0 if passed else 0.42,
        "max_abs_diff": 1e-6,
        "latency_ms": {"p50": 11.2, "p95": 20.5, "p99": 31.7, "max": 33.0},
        "http_errors": [],
        "passed": passed,
        "failed_checks": [] if passed else ["accuracy", "argmax_agreement"],
        **extra,
    }


def released(run_id: str = RUN, day: str = "2026-03-04", version: int = 2026030400) -> dict:
    return release_record(
        model="mnist", day=day, run_id=run_id, hosts=["local"], train=TRAIN, decision=PUBLISH,
        published=[version], deploys=[DEPLOY], canaries=[canary("local")],
    )  # fmt: skip


# ---------------------------------------------------------------- the record


def test_released_run_on_two_hosts():
    record = release_record(
        model="mnist", day="2026-03-04", run_id=RUN, hosts=["local", "serve-b"], train=TRAIN, decision=PUBLISH,
        published=[2026030400, 2026030400], deploys=[DEPLOY, DEPLOY], canaries=[canary("local"), canary("serve-b")],
        dag_id="tfship_daily",
    )  # fmt: skip
    assert record["status"] == "released"
    assert record["version"] == 2026030400
    assert record["summary"] == "version 2026030400 released to local, serve-b: canary passed"
    assert record["candidate"]["path"] == CANDIDATE
    assert record["candidate"]["digest"] == "0123abcd" + "e" * 24
    assert record["gate"]["accuracy_delta"] == pytest.approx(0.0062)
    assert record["gate"]["served_version"] == 2026030300
    assert [h["host"] for h in record["hosts"]] == ["local", "serve-b"]
    assert [h["status"] for h in record["hosts"]] == ["released", "released"]
    assert record["hosts"][1]["canary"]["latency_ms"] == {"p50": 11.2, "p95": 20.5, "p99": 31.7, "max": 33.0}
    assert "host" not in record["hosts"][0]["canary"] and "run_id" not in record["hosts"][0]["canary"]
    json.dumps(record)  # JSON-ready


def test_held_run_skips_every_host():
    record = release_record(
        model="mnist", day="2026-03-04", run_id=RUN, hosts=["local", "serve-b"], train=TRAIN, decision=HOLD,
        published=None, deploys=None, canaries=None,
    )  # fmt: skip
    assert record["status"] == "held"
    assert record["version"] is None
    assert record["summary"] == f"held by the gate: {HOLD['reason']}"
    assert record["gate"]["accuracy_delta"] == pytest.approx(-0.165)
    assert [(h["host"], h["status"], h["published_version"]) for h in record["hosts"]] == [
        ("local", "skipped", None),
        ("serve-b", "skipped", None),
    ]


def test_a_run_overtaken_by_a_later_day_is_held_not_failed():
    why = "version 2026030400 is superseded by version 2026030500 in /srv/serving/mnist; serving untouched"
    record = release_record(
        model="mnist", day="2026-03-04", run_id=RUN, hosts=["local"], train=TRAIN, decision=PUBLISH,
        published=[2026030400], deploys=None, canaries=None, superseded=[why],
    )  # fmt: skip
    assert record["status"] == "held"
    assert record["summary"] == f"superseded: local: {why}"
    assert [(h["status"], h["superseded"]) for h in record["hosts"]] == [("superseded", why)]
    # Without the note the same pieces read as a failure to deploy.
    failed = release_record(
        model="mnist", day="2026-03-04", run_id=RUN, hosts=["local"], train=TRAIN, decision=PUBLISH,
        published=[2026030400], deploys=None, canaries=None,
    )  # fmt: skip
    assert (failed["status"], failed["hosts"][0]["status"]) == ("failed", "not deployed")


def test_failed_canary_that_rolled_back():
    rollback = {"rejected": [2026030400], "moved_to": ["/x/.rejected/2026030400"], "serving": 2026030300}
    record = release_record(
        model="mnist", day="2026-03-04", run_id=RUN, hosts=["local"], train=TRAIN, decision=PUBLISH,
        published=[2026030400], deploys=[DEPLOY], canaries=[canary("local", passed=False, rollback=rollback)],
    )  # fmt: skip
    assert record["status"] == "rolled back"
    assert record["hosts"][0]["status"] == "rolled back"
    assert record["summary"] == (
        "canary failed on local (accuracy, argmax_agreement): rolled back, version 2026030300 serves again"
    )


def test_failed_canary_whose_rollback_failed_is_a_failure():
    record = release_record(
        model="mnist", day="2026-03-04", run_id=RUN, hosts=["local"], train=TRAIN, decision=PUBLISH,
        published=["2026030400"], deploys=[DEPLOY],
        canaries=[canary("local", passed=False, rollback_error="no previous version")],
    )  # fmt: skip
    assert record["status"] == "failed"
    assert record["version"] == 2026030400  # a rendered template string still counts
    assert record["hosts"][0]["status"] == "rollback failed"


def test_failed_canary_with_no_rollback_recorded_is_a_failure():
    record = release_record(
        model="mnist", day="2026-03-04", run_id=RUN, hosts=["local"], train=TRAIN, decision=PUBLISH,
        published=[2026030400], deploys=[DEPLOY], canaries=[canary("local", passed=False)],
    )  # fmt: skip
    assert (record["status"], record["hosts"][0]["status"]) == ("failed", "canary failed")
    assert record["summary"] == "canary failed on local (accuracy, argmax_agreement)"


@pytest.mark.parametrize(
    ("train", "decision", "published", "deploys", "summary_or_host"),
    [
        (None, None, None, None, "no training result: train failed or did not run"),
        (TRAIN, None, None, None, "no gate decision: evaluate failed or did not run"),
        (TRAIN, PUBLISH, [None], None, "local: not published"),
        (TRAIN, PUBLISH, [2026030400], [None], "local: not deployed"),
        (TRAIN, PUBLISH, [2026030400], [DEPLOY], "local: no canary"),
    ],
)
def test_missing_pieces_make_a_failed_run(train, decision, published, deploys, summary_or_host):
    record = release_record(
        model="mnist", day="2026-03-04", run_id=RUN, hosts=["local"], train=train, decision=decision,
        published=published, deploys=deploys, canaries=None,
    )  # fmt: skip
    assert record["status"] == "failed"
    assert record["summary"] == summary_or_host


def test_short_host_sequences_are_padded_and_a_bad_day_is_refused():
    record = release_record(
        model="mnist", day="2026-03-04", run_id=RUN, hosts=["a", "b"], train=TRAIN, decision=PUBLISH,
        published=[2026030400], deploys=[DEPLOY], canaries=[canary("a")],
    )  # fmt: skip
    assert [h["status"] for h in record["hosts"]] == ["released", "not published"]
    assert record["status"] == "failed"
    with pytest.raises(ConfigError, match="'None'"):
        release_record(model="mnist", day="None", run_id=RUN, hosts=[], train=None, decision=None)


def test_log_text_names_status_delta_and_hosts():
    text = render_release_text(released())
    assert text.splitlines()[0] == f"release of model mnist for day 2026-03-04, run {RUN}: RELEASED"
    assert "candidate accuracy 0.9712 vs served v2026030300 0.9650 (+0.0062)" in text
    assert "local: released, published 2026030400, canary p99 31.7 ms" in text


def test_canary_is_read_back_from_the_release_log(tmp_path: Path):
    def canary_from_release_log(text: str, **kwargs):
        log = tmp_path / "releases.jsonl"
        log.write_text(text)
        return ReleaseLog(log).last_event(LogEvent.CANARY, **kwargs)

    lines = [
        json.dumps({"event": "canary", "run_id": "other", "version": 2026030400, "passed": True}),
        json.dumps({"version": 2026030400, "digest": "abc", "host": "local"}),  # a publication line
        '{"event": "canary", "run_id": "torn',
        json.dumps({"event": "canary", "run_id": RUN, "version": 2026030300, "passed": True}),
        json.dumps({"event": "canary", "recorded_at": "t", "run_id": RUN, "version": 2026030400, "passed": False}),
    ]
    found = canary_from_release_log("\n".join(lines), run_id=RUN, version=2026030400)
    assert found == {"run_id": RUN, "version": 2026030400, "passed": False}
    assert canary_from_release_log("\n".join(lines), run_id="nobody") is None


# ---------------------------------------------------------------- storage


def test_write_and_read_round_trip_and_rerun_overwrites(tmp_path: Path):
    storage = LocalStorage(f"file://{tmp_path}")
    record = released()
    path = write_release_record(storage, record)
    assert path.startswith("releases/mnist/2026-03-04/scheduled__2026-03-04T00_00_00_00_00-")
    assert path.endswith(".json") and ":" not in path and "+" not in path
    assert json.loads((tmp_path / path).read_text()) == record
    rerun = dict(record, status="failed")
    assert write_release_record(storage, rerun) == path
    assert [p.name for p in (tmp_path / "releases/mnist/2026-03-04").iterdir()] == [Path(path).name]
    assert read_release_records(storage, "mnist").records == [rerun]


def test_run_ids_that_differ_only_in_unsafe_characters_get_their_own_files():
    first = release_record_path("mnist", "2026-03-04", "manual__2026-03-04T10:00:00+00:00")
    second = release_record_path("mnist", "2026-03-04", "manual__2026-03-04T10_00_00_00_00")
    assert first != second


def test_records_come_newest_first_by_day_then_version_then_run(tmp_path: Path):
    storage = LocalStorage(f"file://{tmp_path}")
    for run_id, day, version in [
        ("run-b", "2026-03-02", 2026030200),
        ("run-d", "2026-03-04", 2026030400),
        ("run-e", "2026-03-04", 2026030401),
        ("run-c", "2026-03-03", 2026030300),
        ("run-a", "2026-03-04", 2026030400),
    ]:
        write_release_record(storage, released(run_id, day, version))
    held = release_record(model="mnist", day="2026-03-03", run_id="run-h", hosts=["local"], train=TRAIN,
                          decision=HOLD)  # fmt: skip
    write_release_record(storage, held)
    order = [r["run_id"] for r in read_release_records(storage, "mnist").records]
    assert order == ["run-e", "run-d", "run-a", "run-c", "run-h", "run-b"]
    assert [r["run_id"] for r in read_release_records(storage, "mnist", limit=2).records] == ["run-e", "run-d"]
    assert read_release_records(storage, "other").records == []


def test_a_corrupt_file_is_skipped_with_a_note(tmp_path: Path):
    storage = LocalStorage(f"file://{tmp_path}")
    write_release_record(storage, released())
    day_dir = tmp_path / "releases/mnist/2026-03-04"
    (day_dir / "broken.json").write_text('{"run_id": "x", "stat')
    (day_dir / "list.json").write_text("[1, 2]")
    (day_dir / ".run.json.inprogress-42").write_text("{")  # a writer's temporary file: not a record
    history = read_release_records(storage, "mnist")
    assert [r["run_id"] for r in history.records] == [RUN]
    assert len(history.skipped) == 2
    assert any("broken.json" in note and "JSONDecodeError" in note for note in history.skipped)
    assert any("list.json: not a release record" in note for note in history.skipped)


def test_artifact_paths_stay_inside_a_candidate_directory():
    assert candidate_artifact_path(CANDIDATE, "training.png") == f"{CANDIDATE}/training.png"
    assert candidate_artifact_path(CANDIDATE + "/", "cv_results.png") == f"{CANDIDATE}/cv_results.png"
    with pytest.raises(PathEscapeError):
        candidate_artifact_path("models/mnist/candidates/../../../etc", "cv_results.png")
    with pytest.raises(PathEscapeError):
        candidate_artifact_path(f"{CANDIDATE}/../2026-03-05-0123abcd", "cv_results.png")
    with pytest.raises(PathEscapeError):
        candidate_artifact_path("/etc", "cv_results.png")
    for outside in ("features/mnist/dt=2026-03-04", "models/mnist/candidates", f"{CANDIDATE}/variables"):
        with pytest.raises(ConfigError, match="not a candidate directory"):
            candidate_artifact_path(outside, "cv_results.png")
    with pytest.raises(ConfigError, match="not an artifact"):
        candidate_artifact_path(CANDIDATE, "saved_model.pb")


# ---------------------------------------------------------------- live state


def test_served_state_from_the_rest_status():
    body = {
        "model_version_status": [
            {"version": "2026030300", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "2026030400", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "2026030200", "state": "END", "status": {"error_code": "OK", "error_message": ""}},
        ]
    }
    assert served_state(200, body).to_dict() == {"version": 2026030400, "state": "AVAILABLE", "error": None}
    loading = {"model_version_status": [{"version": "2026030400", "state": "LOADING", "status": {}}]}
    assert served_state(200, loading).to_dict() == {"version": None, "state": "LOADING v2026030400", "error": None}
    missing = served_state(404, {"error": "Servable not found for request: Latest(mnist)"}).to_dict()
    assert missing == {"version": None, "state": "HTTP 404", "error": "Servable not found for request: Latest(mnist)"}


# ---------------------------------------------------------------- the page


class Elements(HTMLParser):
    """Every element's attributes by id, the text inside it, and every <img> src."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict] = {}
        self.text: dict[str, str] = {}
        self.images: dict[str, str] = {}
        self.scripts = 0
        self._open: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images[attrs.get("id", "")] = attrs["src"]
        if "id" in attrs:
            self.by_id[attrs["id"]] = attrs
            self.text[attrs["id"]] = ""
            if tag not in ("img", "br"):
                self._open.append(attrs["id"])

    def handle_endtag(self, tag):
        if self._open and tag in ("td", "span", "p", "section", "code", "tr", "table", "div"):
            self._open.pop()

    def handle_data(self, data):
        for ident in self._open:
            self.text[ident] += data


def artifact_url(candidate: str, file_name: str) -> str:
    return f"/tfship/releases/artifact?candidate={candidate}&file={file_name}"


SERVED = {
    "local": {"version": 2026030400, "state": "AVAILABLE", "error": None},
    "serve-b": {
        "version": None,
        "state": "UNREACHABLE",
        "error": "http://serve-b:8501/v1/models/mnist: ConnectTimeout",
    },
}


def test_page_shows_served_version_per_host_metrics_canary_and_plots():
    page = render_release_page("mnist", [released()], SERVED, artifact_url)
    found = Elements(page)
    assert found.by_id["served-local"]["data-version"] == "2026030400"
    assert found.text["served-local"].strip() == "2026030400"
    assert found.by_id["served-serve-b"]["data-version"] == ""
    assert "UNREACHABLE" in page and "ConnectTimeout" in page
    assert found.images == {
        "cv-plot": f"/tfship/releases/artifact?candidate={CANDIDATE}&file=cv_results.png",
        "training-curves": f"/tfship/releases/artifact?candidate={CANDIDATE}&file=training.png",
    }
    assert found.by_id["release"]["data-status"] == "released"
    assert found.by_id["release"]["data-version"] == "2026030400"
    assert found.text["candidate-accuracy"] == "0.9712"
    assert found.text["served-accuracy"] == "0.9650"
    assert found.text["accuracy-delta"] == "+0.0062"
    assert found.text["release-digest"] == "0123abcd" + "e" * 24
    assert found.by_id["canary-local"]["data-passed"] == "true"
    # Latency columns in percentile order, as the canary measured them.
    assert "<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th>" in page
    assert ">31.7<" in page
    assert found.scripts == 0 and "http://" not in page.split("<body")[0]  # no script, no remote resource


def test_page_escapes_data_and_shows_history_rows():
    evil = "manual__<script>alert(1)</script>"
    bad = dict(released(run_id=evil), summary="<b>bold</b>")
    page = render_release_page("mnist", [bad, released()], SERVED, artifact_url)
    assert "<script>" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    found = Elements(page)
    assert found.scripts == 0
    assert found.by_id["release"]["data-run-id"] == evil  # attributes carry the text, not markup
    assert "manual__%3Cscript%3Ealert%281%29%3C%2Fscript%3E" in page  # the history link is URL-encoded


def test_page_focuses_the_selected_run_and_reports_notes():
    held = release_record(model="mnist", day="2026-03-05", run_id="run-held", hosts=["local"], train=TRAIN,
                          decision=HOLD)  # fmt: skip
    page = render_release_page(
        "mnist", [held, released()], SERVED, artifact_url, selected_run_id=RUN, notes=["broken.json: bad"]
    )
    found = Elements(page)
    assert found.by_id["release"]["data-run-id"] == RUN
    assert "broken.json: bad" in found.text["notes"]
    assert render_release_page("mnist", [held], SERVED, artifact_url, selected_run_id="gone").count("run-missing") == 1
    newest = Elements(render_release_page("mnist", [held, released()], SERVED, artifact_url))
    assert newest.by_id["release"]["data-status"] == "held"
    assert "HOLD" in newest.text["gate"]


def test_page_without_records_or_hosts_still_renders():
    found = Elements(render_release_page("mnist", [], {}, artifact_url))
    assert "release" not in found.by_id
    assert "history" in found.by_id and "serving" in found.by_id
