"""Helpers shared by the publication tests (reading results back independently of the publisher)."""

from __future__ import annotations

import json
import os
from pathlib import Path

NUMERIC_DIR_CHARS = set("0123456789")


def tree(directory: Path) -> dict[str, bytes]:
    """Every file below `directory` with its bytes, by relative path."""
    return {
        str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()
    }


def source_tree(storage, directory: str) -> dict[str, bytes]:
    """Every file of a candidate directory on a storage, read back directly."""
    files = {}
    pending = [""]
    while pending:
        relative = pending.pop()
        for name in storage.list(os.path.join(directory, relative) if relative else directory):
            child = os.path.join(relative, name) if relative else name
            if storage.is_dir(os.path.join(directory, child)):
                pending.append(child)
            else:
                with storage.open_read(os.path.join(directory, child)) as handle:
                    files[child] = handle.read()
    return files


def numeric_children(directory: Path) -> list[str]:
    """Names TF Serving would load as versions."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name and set(p.name) <= NUMERIC_DIR_CHARS)


def release_lines(directory: Path) -> list[dict]:
    """The release log, parsed line by line."""
    path = directory / "releases.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
