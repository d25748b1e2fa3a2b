"""The release view over HTTP: the page, its records as JSON, and the candidate plots it shows.

A FastAPI app the `tfship` plugin mounts on the api-server at `/tfship` (see release_view.py).
Routes are plain `def`: storage and TF Serving calls block, so FastAPI runs them in its threadpool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from tfship.config import Settings
from tfship.errors import ConfigError, StorageError
from tfship.paths import check_name
from tfship.report.page import render_release_page
from tfship.report.record import ARTIFACT_FILES, ReleaseHistory, candidate_artifact_path, read_release_records
from tfship.storage import Storage

STATUS_TIMEOUT_S = 2.0  # a hung serving host must not hold the page for long
MAX_ARTIFACT_BYTES = 32 << 20
MEDIA_TYPES = {".png": "image/png", ".json": "application/json"}
# Data-derived text is escaped; this is the second fence: no script, no remote resource.
PAGE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'self'"


def served_versions(model: str, hosts: Sequence[str], port: int, timeout_s: float = STATUS_TIMEOUT_S) -> dict:
    """Host -> {"version", "state", "error"} from each host's REST status, asked concurrently."""
    import requests

    from tfship.serving.client import ServingClient, rest_base_url

    def ask(host: str) -> dict[str, Any]:
        client = ServingClient(rest_base_url(host, port), model, timeout_s=timeout_s)
        try:
            served = client.served().to_dict()
            labels = {label: client.labelled_version(label) for label in ("stable", "canary")}
            return {**served, "labels": {name: version for name, version in labels.items() if version}}
        except requests.RequestException as err:
            return {"version": None, "state": "UNREACHABLE", "error": f"{client.model_url()}: {type(err).__name__}"}
        except Exception as err:  # noqa: BLE001 - one odd host must not take the page down
            return {"version": None, "state": "ERROR", "error": f"{type(err).__name__}: {err}"}
        finally:
            client.close()

    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(hosts)), thread_name_prefix="served") as pool:
        return dict(zip(hosts, pool.map(ask, hosts), strict=True))


def _settings() -> Settings:
    """The api-server's configuration, read for each request (its one place)."""
    try:
        return Settings.from_env()
    except ConfigError as err:  # say which variable is wrong rather than a bare 500
        raise HTTPException(status_code=500, detail=f"tfship configuration: {err}") from None


def _model(requested: str | None, settings: Settings) -> str:
    try:
        return check_name("model", requested or settings.model)
    except ConfigError as err:
        raise HTTPException(status_code=400, detail=str(err)) from None


def _history(storage: Storage, model: str, limit: int) -> ReleaseHistory:
    try:
        return read_release_records(storage, model, limit)
    except StorageError as err:  # storage down: still show what serves
        return ReleaseHistory([], [f"release records unreadable: {err}"])


def require_login(dag_id: str = "tfship_daily") -> Callable[..., None]:
    """Airflow's own check: a logged-in user (session cookie or bearer token) allowed to read the DAG's runs.

    The records are what the daily DAG's runs did, so whoever may not see those runs may not see them here.
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=dag_id)


def create_app(login: Callable[..., Any] | None = None) -> FastAPI:
    """The app mounted at `/tfship`; `login` is the auth dependency (Airflow's by default)."""
    login = login or require_login()
    app = FastAPI(
        title="tfship releases",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(login)],
    )
    app.state.login = login  # tests override it: app.dependency_overrides[app.state.login]

    @app.get("/releases", response_class=HTMLResponse)
    def releases_page(
        request: Request,
        model: str | None = None,
        run_id: str | None = None,
        limit: int = Query(30, ge=1, le=366),
    ) -> HTMLResponse:
        """The page: serving now per host, the chosen (or newest) run, recent runs."""
        settings = _settings()
        name = _model(model, settings)
        history = _history(settings.storage.open(), name, limit)
        hosts = [host.name for host in settings.serving_hosts]
        served = served_versions(name, hosts, settings.serving_rest_port)
        # The mount path (and the api-server's base path) is in root_path: links work under any prefix.
        root = request.scope.get("root_path", "").rstrip("/")

        def artifact_url(candidate: str, file_name: str) -> str:
            return f"{root}/releases/artifact?{urlencode({'candidate': candidate, 'file': file_name})}"

        page = render_release_page(
            name, history.records, served, artifact_url, selected_run_id=run_id, notes=history.skipped
        )
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"})

    @app.get("/releases.json")
    def releases_json(model: str | None = None, limit: int = Query(30, ge=1, le=366)) -> JSONResponse:
        """The records, newest first, and the files that could not be read."""
        settings = _settings()
        name = _model(model, settings)
        history = _history(settings.storage.open(), name, limit)
        return JSONResponse({"model": name, "records": history.records, "skipped": history.skipped})

    @app.get("/releases/artifact")
    def artifact(candidate: str, file: str) -> Response:
        """One allow-listed file of a candidate directory under models/<model>/candidates/."""
        if file not in ARTIFACT_FILES:
            allowed = ", ".join(sorted(ARTIFACT_FILES))
            raise HTTPException(status_code=404, detail=f"{file!r} is not served here (only {allowed})")
        try:
            path = candidate_artifact_path(candidate, file)
        except ConfigError as err:  # PathEscapeError included: '..', absolute paths
            raise HTTPException(status_code=400, detail=str(err)) from None
        storage = _settings().storage.open()
        try:
            if storage.size(path) > MAX_ARTIFACT_BYTES:
                raise HTTPException(status_code=413, detail=f"{path} is larger than {MAX_ARTIFACT_BYTES} bytes")
            with storage.open_read(path) as handle:
                content = handle.read()
        except StorageError:
            raise HTTPException(status_code=404, detail=f"{path} does not exist") from None
        media_type = MEDIA_TYPES.get(os.path.splitext(file)[1], "application/octet-stream")
        # Candidate directories are named by content digest: a path's bytes do not change.
        headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return Response(content, media_type=media_type, headers=headers)

    return app
