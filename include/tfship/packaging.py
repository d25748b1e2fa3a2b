"""Ship the library to Spark executors: a deterministic zip stored by content digest."""

from __future__ import annotations

import hashlib
import io
import posixpath
import zipfile
from pathlib import Path

from tfship.storage import Storage

INCLUDE_DIR = Path(__file__).resolve().parents[1]
PACKAGES = ("tfship", "jobs")


def library_zip_bytes(include_dir: Path = INCLUDE_DIR) -> bytes:
    """The library's .py files in a zip with fixed timestamps: same code, same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for package in PACKAGES:
            for source in sorted((include_dir / package).rglob("*.py")):
                info = zipfile.ZipInfo(source.relative_to(include_dir).as_posix(), date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, source.read_bytes())
    return buffer.getvalue()


def publish_library_zip(storage: Storage) -> str:
    """Store the zip under work/lib/tfship-<md5>.zip (once per content) and return its URI."""
    data = library_zip_bytes()
    path = posixpath.join("work", "lib", f"tfship-{hashlib.md5(data).hexdigest()}.zip")
    if not storage.exists(path):
        with storage.open_write(path) as handle:
            handle.write(data)
    return storage.uri(path)
