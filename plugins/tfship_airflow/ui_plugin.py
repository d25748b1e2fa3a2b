"""The `tfship` Airflow plugin: the release view on the api-server and its entry in the UI navigation.

Kept apart from the operators so DAG files and workers never import core Airflow's plugin machinery.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from airflow.plugins_manager import AirflowPlugin

from tfship_airflow.release_view import RELEASES_ROUTE, URL_PREFIX


class TfshipPlugin(AirflowPlugin):
    """Registers the release view with the api-server and the UI navigation."""

    name = "tfship"

    # Built on first use (the api-server), not at import: DAG files import this module for the operator.
    @cached_property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The release view app, mounted at /tfship."""
        from tfship_airflow.release_app import create_app

        return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "tfship releases"}]

    @cached_property
    def external_views(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The nav entry. No url_route: the page opens as its own tab, where the session cookie reaches it."""
        from airflow.configuration import conf

        root = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
        return [
            {
                "name": "Releases",
                "href": f"{root}{URL_PREFIX}{RELEASES_ROUTE}",
                "destination": "nav",
                "category": "browse",
            }
        ]
