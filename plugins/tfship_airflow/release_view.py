"""The release view's address and the "Release view" task button.

- `TfshipPlugin` (ui_plugin.py, which no DAG imports) mounts the FastAPI app of release_app.py
  on the api-server at `/tfship` and adds a "Releases" entry to the UI navigation.
- `ReleaseViewLink` is the "Release view" button of a task. Airflow 3 computes operator links in
  the task runner when the task ends (success or failure) and stores each as an XCom
  (`_link_ReleaseViewLink`); the api-server reads that XCom back, so nothing needs registering.
- `ReleaseReportOperator` (report.py) writes the record the page shows.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from airflow.sdk import BaseOperator, BaseOperatorLink

URL_PREFIX = "/tfship"
RELEASES_ROUTE = "/releases"


def _api_base_url() -> str:
    from airflow.sdk.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "").rstrip("/")


def release_view_url(model: str, run_id: str | None = None, *, base_url: str | None = None) -> str:
    """`<[api] base_url>/tfship/releases?model=..&run_id=..` (a root-relative path when base_url is unset)."""
    base = _api_base_url() if base_url is None else base_url.rstrip("/")
    query = {"model": model, **({"run_id": run_id} if run_id else {})}
    return f"{base}{URL_PREFIX}{RELEASES_ROUTE}?{urlencode(query)}"


class ReleaseViewLink(BaseOperatorLink):
    """The "Release view" button: the release page of the task's model, focused on its run."""

    name = "Release view"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        """Computed by the task runner after the task ends; stored as an XCom for the UI."""
        return release_view_url(str(operator.model), ti_key.run_id)
