"""MANIFEST.json: the identity of a model directory (md5 and size of every file, one digest).

The trainer writes it last; the publisher reads it first (one small read) and checks every
file against it. The digest is the md5 of the canonical listing `path md5 size` of every
file except the manifest itself, so it changes exactly when some file's content changes.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from tfship.errors import TfshipError
from tfship.storage import Storage

MANIFEST_FILE = "MANIFEST.json"
MANIFEST_FORMAT = 1
CHUNK = 1 << 20


class ManifestError(TfshipError):
    """A manifest is missing, malformed, or does not match the files it describes."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a model directory."""

    path: str
    md5: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What a model directory holds and its overall digest."""

    model: str
    day: str
    files: tuple[FileEntry, ...]
    digest: str

    def to_json(self) -> str:
        """The file's text (stable key order)."""
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "model": self.model,
                "day": self.day,
                "digest": self.digest,
                "files": [{"path": f.path, "md5": f.md5, "size": f.size} for f in self.files],
            },
            indent=2,
            sort_keys=True,
        )

    @property
    def total_bytes(self) -> int:
        """Bytes of all files but the manifest."""
        return sum(f.size for f in self.files)


def digest_of(files: Iterable[FileEntry]) -> str:
    """The md5 of the canonical listing of the files."""
    listing = "".join(f"{f.path} {f.md5} {f.size}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.md5(listing.encode("utf-8")).hexdigest()


def build_manifest(model: str, day: str, files: Iterable[FileEntry]) -> Manifest:
    """A manifest over the given entries (the manifest file itself never listed)."""
    entries = tuple(sorted((f for f in files if f.path != MANIFEST_FILE), key=lambda f: f.path))
    return Manifest(model=model, day=day, files=entries, digest=digest_of(entries))


def parse_manifest(text: str, where: str = "MANIFEST.json") -> Manifest:
    """Parse and self-check a manifest; errors name `where`."""
    try:
        raw = json.loads(text)
        files = tuple(FileEntry(str(f["path"]), str(f["md5"]), int(f["size"])) for f in raw["files"])
        manifest = Manifest(model=str(raw["model"]), day=str(raw["day"]), files=files, digest=str(raw["digest"]))
    except (ValueError, KeyError, TypeError) as err:
        raise ManifestError(f"{where} is not a valid manifest: {err}") from None
    if raw.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{where} has format {raw.get('format')!r}, expected {MANIFEST_FORMAT}")
    for entry in files:
        if entry.path.startswith("/") or ".." in entry.path.split("/") or entry.path == MANIFEST_FILE:
            raise ManifestError(f"{where} lists a bad path {entry.path!r}")
    if digest_of(files) != manifest.digest:
        raise ManifestError(f"{where} digest {manifest.digest} does not match its own file list")
    return manifest


def walk_files(storage: Storage, directory: str) -> list[str]:
    """Every file below `directory`, as paths relative to it, sorted."""
    found: list[str] = []
    pending = [""]
    while pending:
        relative = pending.pop()
        for name in storage.list(posixpath.join(directory, relative) if relative else directory):
            child = posixpath.join(relative, name) if relative else name
            if storage.is_dir(posixpath.join(directory, child)):
                pending.append(child)
            else:
                found.append(child)
    return sorted(found)


def md5_of_stream(stream: BinaryIO) -> tuple[str, int]:
    """md5 and size of a readable binary stream, read in 1 MiB chunks."""
    md5, size = hashlib.md5(), 0
    while chunk := stream.read(CHUNK):
        md5.update(chunk)
        size += len(chunk)
    return md5.hexdigest(), size


def manifest_for_directory(storage: Storage, directory: str, *, model: str, day: str) -> Manifest:
    """Hash every file of a directory on storage into a manifest."""
    entries = []
    for path in walk_files(storage, directory):
        if path == MANIFEST_FILE:
            continue
        with storage.open_read(posixpath.join(directory, path)) as handle:
            md5, size = md5_of_stream(handle)
        entries.append(FileEntry(path, md5, size))
    return build_manifest(model, day, entries)


def write_manifest(storage: Storage, directory: str, manifest: Manifest) -> None:
    """Write MANIFEST.json into the directory (atomically, as every storage write)."""
    with storage.open_write(posixpath.join(directory, MANIFEST_FILE)) as handle:
        handle.write(manifest.to_json().encode("utf-8"))


def read_manifest(storage: Storage, directory: str) -> Manifest:
    """Read and self-check a directory's MANIFEST.json."""
    path = posixpath.join(directory, MANIFEST_FILE)
    if not storage.exists(path):
        raise ManifestError(f"{storage.uri(path)} does not exist: the model directory is incomplete")
    with storage.open_read(path) as handle:
        return parse_manifest(handle.read().decode("utf-8"), storage.uri(path))
