"""Runs airflow_ui.mjs (Playwright + Debian's headless Chromium) against a live Airflow UI from pytest."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness import PartUnavailable

BROWSER_DIR = Path(__file__).resolve().parent
SCRIPT = BROWSER_DIR / "airflow_ui.mjs"
LOCKFILE = BROWSER_DIR / "package-lock.json"
NODE_MODULES = BROWSER_DIR / "node_modules"
# Written after a successful `npm ci`: the lock file's digest that node_modules was installed from.
STAMP = NODE_MODULES / ".tfship-lock.sha256"
MIN_NODE_MAJOR = 20  # playwright-core 1.64 requires Node >= 20
TAIL_CHARS = 4000


class BrowserDepsMissing(PartUnavailable):
    """Node, npm, Chromium or the npm packages of tests/browser are missing."""


class UIDriverError(RuntimeError):
    """An airflow_ui.mjs command failed; `result` holds its JSON line when it printed one."""

    def __init__(self, message: str, result: dict[str, Any] | None = None, returncode: int | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.returncode = returncode


def chromium_path() -> str:
    """The Chromium binary the driver launches: $CHROMIUM or Debian's /usr/bin/chromium."""
    return os.environ.get("CHROMIUM") or "/usr/bin/chromium"


def _tail(text: str) -> str:
    return text[-TAIL_CHARS:] if len(text) > TAIL_CHARS else text


def _lock_digest() -> str:
    return hashlib.sha256(LOCKFILE.read_bytes()).hexdigest()


def _node_modules_fresh() -> bool:
    if not (STAMP.is_file() and (NODE_MODULES / "playwright-core" / "package.json").is_file()):
        return False
    return STAMP.read_text().strip() == _lock_digest()


def _check_tools() -> tuple[str, str]:
    node = shutil.which("node")
    npm = shutil.which("npm")
    missing = [name for name, found in (("node", node), ("npm", npm)) if not found]
    if missing:
        raise BrowserDepsMissing(f"{' and '.join(missing)} not on PATH: apt-get install -y nodejs npm")
    assert node is not None and npm is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match.group(1)) < MIN_NODE_MAJOR:
        raise BrowserDepsMissing(f"node {version or '?'} is too old: playwright-core needs Node >= {MIN_NODE_MAJOR}")
    chromium = chromium_path()
    if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
        raise BrowserDepsMissing(f"no Chromium at {chromium}: apt-get install -y chromium (or set CHROMIUM)")
    return node, npm


def ensure_browser_deps() -> None:
    """Check node, npm and Chromium, and `npm ci` tests/browser when node_modules is missing or stale."""
    _, npm = _check_tools()
    if _node_modules_fresh():
        return
    # One installer at a time (pytest-xdist workers, parallel sessions); the others wait, then re-check.
    with open(BROWSER_DIR / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _node_modules_fresh():
            return
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=BROWSER_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            raise BrowserDepsMissing(
                f"npm ci in {BROWSER_DIR} failed ({proc.returncode}):\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}"
            )
        STAMP.write_text(_lock_digest() + "\n")


def _last_json_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                return parsed
    return None


def run_ui(command: str, *args: str, timeout_s: float = 180, token: str | None = None) -> dict[str, Any]:
    """Run `node airflow_ui.mjs COMMAND ARGS...` and return its JSON line; raise UIDriverError on failure.

    `token`: a JWT from the api-server's /auth/token for a UI that asks for a login; the browser
    carries it as the UI's session cookie and the script's REST calls as a bearer token.
    """
    ensure_browser_deps()
    argv = [shutil.which("node") or "node", str(SCRIPT), command, *args]
    if "--timeout-s" not in args:
        # Let the script give up (and take its failure screenshot) before this process kills it.
        argv += ["--timeout-s", str(max(10, int(timeout_s) - 30))]
    env = {**os.environ, "CHROMIUM": chromium_path()}
    if token is not None:
        env["AIRFLOW_API_TOKEN"] = token
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        errs = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
        raise UIDriverError(
            f"airflow_ui {command} timed out after {timeout_s}s\nstdout:\n{_tail(out)}\nstderr:\n{_tail(errs)}"
        ) from err
    result = _last_json_line(proc.stdout)
    if proc.returncode != 0 or result is None or not result.get("ok"):
        reason = (result or {}).get("error") or "no JSON result"
        shot = (result or {}).get("failure_screenshot")
        raise UIDriverError(
            f"airflow_ui {command} failed (exit {proc.returncode}): {reason}"
            + (f"\nfailure screenshot: {shot}" if shot else "")
            + f"\nstdout:\n{_tail(proc.stdout)}\nstderr:\n{_tail(proc.stderr)}",
            result=result,
            returncode=proc.returncode,
        )
    return result
