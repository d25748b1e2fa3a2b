"""A REST client for one model on one TF Serving, and the one decoding of its status reply.

HTTP goes through `requests` (imported on use). TF Serving answers the status call with 200
whatever the state, so health is read from `state`, never from the HTTP code alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tfship.constants import VersionState
from tfship.errors import TfshipError
from tfship.paths import check_name
from tfship.release.serving_dir import ModelVersion


class ServingError(TfshipError):
    """Serving did not do what was asked; the message names the model, version and URL."""


class ServingUnreachable(ServingError):
    """Nothing answers at the serving endpoint: an infrastructure fault, not evidence against the model."""


class VersionLoadFailed(ServingError):
    """The server gave up loading a version: state END with an error."""

    def __init__(self, model: str, version: int, error_code: str, error_message: str) -> None:
        self.model, self.version, self.error_code, self.error_message = model, version, error_code, error_message
        super().__init__(f"model {model!r} version {version} failed to load ({error_code}): {error_message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return VersionLoadFailed, (self.model, self.version, self.error_code, self.error_message)


@dataclass(frozen=True)
class VersionStatus:
    """One entry of `model_version_status`."""

    version: ModelVersion | None
    state: VersionState | None  # None: a state this client does not know
    error_code: str = "OK"
    error_message: str = ""

    @property
    def load_failed(self) -> bool:
        """END with an error: the server gave up on this version (END without one is a plain unload)."""
        return self.state == VersionState.END and (self.error_code != "OK" or bool(self.error_message))


def parse_status_reply(body: Mapping[str, Any]) -> list[VersionStatus]:
    """The entries of a `GET /v1/models/<m>[/versions/<v>]` answer, as sent (newest first)."""
    statuses = []
    for entry in body.get("model_version_status") or []:
        if not isinstance(entry, dict):
            continue
        status = entry.get("status") or {}
        state = entry.get("state")
        statuses.append(
            VersionStatus(
                version=ModelVersion.parse(entry.get("version")),
                state=VersionState(state) if state in VersionState.__members__ else None,
                error_code=str(status.get("error_code", "OK")),
                error_message=str(status.get("error_message") or ""),
            )
        )
    return statuses


@dataclass(frozen=True)
class ServedState:
    """What a host serves right now, for people: the highest AVAILABLE version, else why not."""

    version: int | None
    state: str
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"version": self.version, "state": self.state, "error": self.error}


def served_state(status_code: int, body: Mapping[str, Any]) -> ServedState:
    """From TF Serving's `GET /v1/models/<m>` answer: the version it serves and its state."""
    if status_code != 200:
        return ServedState(None, f"HTTP {status_code}", str(body.get("error", body))[:300])
    statuses = parse_status_reply(body)
    available = [s.version for s in statuses if s.state == VersionState.AVAILABLE and s.version is not None]
    if available:
        return ServedState(int(max(available)), str(VersionState.AVAILABLE))
    if not statuses:
        return ServedState(None, "NO VERSION")
    newest = max(statuses, key=lambda s: s.version if s.version is not None else -1)
    raw_state = newest.state if newest.state is not None else "?"
    return ServedState(None, f"{raw_state} v{newest.version}", newest.error_message or None)


class ServingClient:
    """REST calls to one model on one TF Serving (`http://host:8501`)."""

    def __init__(self, base_url: str, model: str, *, timeout_s: float = 30.0, session: Any = None) -> None:
        import requests

        check_name("model", model)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.session = session or requests.Session()

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    def model_url(self, version: int | None = None, label: str | None = None) -> str:
        """`/v1/models/<m>`, `/v1/models/<m>/versions/<v>` or `/v1/models/<m>/labels/<l>`."""
        url = f"{self.base_url}/v1/models/{self.model}"
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        if label is not None:
            return f"{url}/labels/{label}"
        return url if version is None else f"{url}/versions/{int(version)}"

    def version_status(self, version: int | None = None) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of the status call; raises requests' errors when nothing answers."""
        response = self.session.get(self.model_url(version), timeout=self.timeout_s)
        return response.status_code, _json_body(response)

    def labelled_version(self, label: str) -> int | None:
        """The version a label points at now (from the label's metadata), or None when the label is unknown."""
        response = self.session.get(f"{self.model_url(label=label)}/metadata", timeout=self.timeout_s)
        if response.status_code != 200:
            return None
        return int(_json_body(response).get("model_spec", {}).get("version", 0)) or None

    def served(self) -> ServedState:
        """What the model serves now (raises requests' errors when nothing answers)."""
        return served_state(*self.version_status())

    def unreachable(self, timeout_s: float = 5.0) -> str | None:
        """Why the server does not answer its status call (refused, timed out), or None when it answers."""
        import requests

        try:
            self.session.get(self.model_url(), timeout=timeout_s)
        except requests.RequestException as err:
            return f"{self.model_url()} does not answer: {type(err).__name__}: {err}"
        return None

    def predict(
        self,
        instances: Any,
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "serving_default",
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of a row-format predict, pinned to `version` or `label` when given."""
        response = self.session.post(
            f"{self.model_url(version, label)}:predict",
            data=json.dumps({"signature_name": signature_name, "instances": instances}),
            headers={"Content-Type": "application/json"},
            timeout=self.timeout_s,
        )
        return response.status_code, _json_body(response)

    def wait_until_available(
        self,
        version: int,
        *,
        timeout_s: float,
        poll_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        check_alive: Callable[[], None] | None = None,
    ) -> VersionStatus:
        """Poll `/versions/<v>` until AVAILABLE; END with an error raises VersionLoadFailed with its text."""
        import requests

        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            try:
                code, body = self.version_status(version)
            except requests.RequestException as err:  # the container may still be starting
                code, body, last = 0, {}, f"no answer from {self.base_url}: {type(err).__name__}"
                if check_alive is not None:
                    check_alive()
            if code == 200:
                entry = next((s for s in parse_status_reply(body) if s.version == version), None)
                if entry is not None:
                    if entry.state == VersionState.AVAILABLE:
                        return entry
                    if entry.load_failed:
                        raise VersionLoadFailed(self.model, version, entry.error_code, entry.error_message)
                    # END without an error: unloaded; after a rollback it is aspired and loaded again.
                    unloaded = (
                        " (unloaded: a newer version or the policy wins?)" if entry.state == VersionState.END else ""
                    )
                    last = f"state {entry.state}{unloaded}"
            elif code:
                last = f"HTTP {code}: {body.get('error', body)}"
            if time.monotonic() >= deadline:
                raise ServingError(
                    f"model {self.model!r} version {version} not AVAILABLE at {self.model_url(version)} "
                    f"after {timeout_s:.0f}s; last seen: {last}"
                )
            sleep(poll_s)

    def wait_until_answering(
        self, *, timeout_s: float, poll_s: float = 0.2, check_alive: Callable[[], None] | None = None
    ) -> float:
        """Block until the model's status call answers 200 (the REST port opens after the first load)."""
        import requests

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.version_status()[0] == 200:
                    return time.monotonic()
            except requests.RequestException:
                if check_alive is not None:
                    check_alive()
            if time.monotonic() >= deadline:
                raise ServingError(f"{self.model_url()} did not answer within {timeout_s:.0f}s")
            time.sleep(poll_s)


def rest_base_url(host: str, rest_port: int, rest_host: str | None = None) -> str:
    """`http://<host>:<port>`; the 'local' serving host is loopback."""
    address = rest_host or ("127.0.0.1" if host in ("local", "localhost") else host)
    return f"http://{address}:{int(rest_port)}"


def _json_body(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"error": response.text[:500]}
    return body if isinstance(body, dict) else {"error": f"unexpected JSON {str(body)[:200]}"}
