"""Notes for the end-of-run summary (which serving image ran, timings), printed by tests/conftest.py.

They go through a file: workers of pytest-xdist print no terminal summary of their own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

NOTES_FILE = (
    Path(os.environ.get("TFSHIP_ARTIFACTS_DIR", Path(__file__).resolve().parents[1] / "var" / "artifacts"))
    / "test-notes.txt"
)


def say(message: str) -> None:
    """Keep a note for the summary, and show it at once on stderr (past pytest's capture)."""
    NOTES_FILE.parent.mkdir(parents=True, exist_ok=True)
    with NOTES_FILE.open("a") as notes:
        notes.write(message.replace("\n", " ") + "\n")
    sys.__stderr__.write(f"\n[tfship-tests] {message}\n")
