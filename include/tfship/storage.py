"""One small interface over the storage root: `file://` for local runs, `hdfs://` through WebHDFS.

Paths given to a Storage are relative to its root; a path that would leave the root is
refused. Single files are written under a hidden temporary name and renamed into place
when the writer closes cleanly, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlparse

from tfship.errors import ConfigError, StorageError
from tfship.paths import normalize_relative


class Storage(Protocol):
    """What the pipeline needs from a filesystem."""

    root_uri: str

    def uri(self, path: str) -> str: ...
    def exists(self, path: str) -> bool: ...
    def is_dir(self, path: str) -> bool: ...
    def list(self, path: str) -> list[str]: ...
    def size(self, path: str) -> int: ...
    def open_read(self, path: str, offset: int = 0) -> contextlib.AbstractContextManager[BinaryIO]: ...
    def open_write(self, path: str) -> contextlib.AbstractContextManager[BinaryIO]: ...
    def rename(self, src: str, dst: str) -> None: ...
    def delete(self, path: str, recursive: bool = False) -> bool: ...
    def makedirs(self, path: str) -> None: ...


def fsync_file(path: Path) -> None:
    """Make a written file's data durable (fsync applies to the inode, whichever descriptor)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_sibling(path: str) -> str:
    head, name = posixpath.split(path)
    return posixpath.join(head, f".{name}.inprogress-{os.getpid()}")


class LocalStorage:
    """A storage root on the local filesystem (`file:///abs/dir`)."""

    def __init__(self, root_uri: str) -> None:
        parsed = urlparse(root_uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise ConfigError(f"storage root {root_uri!r} must look like file:///absolute/path")
        self.root_uri = root_uri.rstrip("/")
        self.root = Path(parsed.path)

    def _local(self, path: str) -> Path:
        relative = normalize_relative(path)
        return self.root / relative if relative else self.root

    def uri(self, path: str) -> str:
        """The absolute URI of a root-relative path (for Spark and for messages)."""
        # Not Path.as_uri(): it would percent-encode the "=" of Hive-style partitions.
        return f"file://{self._local(path)}"

    def exists(self, path: str) -> bool:
        return self._local(path).exists()

    def is_dir(self, path: str) -> bool:
        return self._local(path).is_dir()

    def list(self, path: str) -> list[str]:
        target = self._local(path)
        if not target.is_dir():
            raise StorageError(f"{self.uri(path)} is not an existing directory")
        return sorted(child.name for child in target.iterdir())

    def size(self, path: str) -> int:
        try:
            return self._local(path).stat().st_size
        except FileNotFoundError:
            raise StorageError(f"{self.uri(path)} does not exist") from None

    @contextlib.contextmanager
    def open_read(self, path: str, offset: int = 0) -> Iterator[BinaryIO]:
        """The file's bytes from `offset` on."""
        try:
            handle = open(self._local(path), "rb")
        except FileNotFoundError:
            raise StorageError(f"{self.uri(path)} does not exist") from None
        with handle:
            if offset:
                handle.seek(offset)
            yield handle

    @contextlib.contextmanager
    def open_write(self, path: str) -> Iterator[BinaryIO]:
        final = self._local(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = self._local(_temp_sibling(normalize_relative(path)))
        try:
            with open(temp, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def rename(self, src: str, dst: str) -> None:
        """Move src to dst; dst must not exist (HDFS would move src *into* a directory)."""
        source, target = self._local(src), self._local(dst)
        if not source.exists():
            raise StorageError(f"cannot rename {self.uri(src)}: it does not exist")
        if target.exists():
            raise StorageError(f"cannot rename {self.uri(src)} to {self.uri(dst)}: the target exists")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)

    def delete(self, path: str, recursive: bool = False) -> bool:
        target = self._local(path)
        if not target.exists() and not target.is_symlink():
            return False
        if target.is_dir() and not target.is_symlink():
            if recursive:
                shutil.rmtree(target)
            else:
                target.rmdir()
        else:
            target.unlink()
        return True

    def makedirs(self, path: str) -> None:
        self._local(path).mkdir(parents=True, exist_ok=True)


class WebHdfsStorage:
    """A storage root on HDFS (`hdfs://namenode/abs/dir`), spoken to over WebHDFS/HttpFS.

    Several endpoints fail over to each other (the `hdfs` client rotates on connection
    errors, timeouts and standby NameNodes).
    """

    def __init__(
        self,
        root_uri: str,
        endpoints: Sequence[str],
        user: str,
        timeout: tuple[float, float] = (5.0, 60.0),
    ) -> None:
        from hdfs import InsecureClient  # heavy-ish; only when HDFS is used

        parsed = urlparse(root_uri)
        if parsed.scheme != "hdfs" or not parsed.path.startswith("/"):
            raise ConfigError(f"storage root {root_uri!r} must look like hdfs://namenode:port/absolute/path")
        if not endpoints:
            raise ConfigError(f"storage root {root_uri!r} needs at least one WebHDFS endpoint")
        self.root_uri = root_uri.rstrip("/")
        self.root = parsed.path.rstrip("/") or "/"
        self.endpoints = tuple(endpoints)
        self._client = InsecureClient(";".join(self.endpoints), user=user, timeout=timeout)

    def _hdfs(self, path: str) -> str:
        relative = normalize_relative(path)
        return posixpath.join(self.root, relative) if relative else self.root

    def uri(self, path: str) -> str:
        relative = normalize_relative(path)
        return f"{self.root_uri}/{relative}" if relative else self.root_uri

    @contextlib.contextmanager
    def _errors(self, action: str, path: str) -> Iterator[None]:
        """Turn client errors into StorageErrors that name the path and the endpoints."""
        import requests
        from hdfs.util import HdfsError

        try:
            yield
        except HdfsError as err:
            if getattr(err, "exception", None) == "FileNotFoundException":
                raise StorageError(f"{self.uri(path)} does not exist") from err  # same words as LocalStorage
            raise StorageError(f"{action} {self.uri(path)} failed: {err}") from err
        except requests.exceptions.RequestException as err:
            raise StorageError(
                f"{action} {self.uri(path)} failed: no WebHDFS endpoint of "
                f"{';'.join(self.endpoints)} answered ({type(err).__name__}: {err})"
            ) from err

    def _status(self, path: str) -> dict | None:
        with self._errors("stat", path):
            return self._client.status(self._hdfs(path), strict=False)

    def exists(self, path: str) -> bool:
        return self._status(path) is not None

    def is_dir(self, path: str) -> bool:
        status = self._status(path)
        return status is not None and status["type"] == "DIRECTORY"

    def list(self, path: str) -> list[str]:
        if not self.is_dir(path):
            raise StorageError(f"{self.uri(path)} is not an existing directory")
        with self._errors("list", path):
            return sorted(self._client.list(self._hdfs(path)))

    def size(self, path: str) -> int:
        status = self._status(path)
        if status is None:
            raise StorageError(f"{self.uri(path)} does not exist")
        return int(status["length"])

    @contextlib.contextmanager
    def open_read(self, path: str, offset: int = 0) -> Iterator[BinaryIO]:
        """The file's bytes from `offset` on (WebHDFS/HttpFS OPEN with `offset`)."""
        # No status call first: one round trip per file matters when publishing many files.
        with self._errors("read", path), self._client.read(self._hdfs(path), offset=offset) as reader:
            yield reader

    @contextlib.contextmanager
    def open_write(self, path: str) -> Iterator[BinaryIO]:
        relative = normalize_relative(path)
        temp = _temp_sibling(relative)
        try:
            with self._errors("write", path), self._client.write(self._hdfs(temp), overwrite=True) as writer:
                yield writer
            # WebHDFS has no atomic replace: the target is absent for one round trip.
            with self._errors("replace", path):
                self._client.delete(self._hdfs(relative))
                self._client.rename(self._hdfs(temp), self._hdfs(relative))
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.delete(self._hdfs(temp))
            raise

    def rename(self, src: str, dst: str) -> None:
        if not self.exists(src):
            raise StorageError(f"cannot rename {self.uri(src)}: it does not exist")
        if self.exists(dst):
            raise StorageError(f"cannot rename {self.uri(src)} to {self.uri(dst)}: the target exists")
        with self._errors("rename", src):
            self._client.makedirs(posixpath.dirname(self._hdfs(dst)))
            self._client.rename(self._hdfs(src), self._hdfs(dst))

    def delete(self, path: str, recursive: bool = False) -> bool:
        with self._errors("delete", path):
            return bool(self._client.delete(self._hdfs(path), recursive=recursive))

    def makedirs(self, path: str) -> None:
        with self._errors("mkdir", path):
            self._client.makedirs(self._hdfs(path))


def open_storage(root_uri: str, webhdfs_endpoints: Sequence[str] = (), user: str | None = None) -> Storage:
    """The backend for a storage root URI; an unknown scheme is refused by name."""
    scheme = urlparse(root_uri).scheme
    if scheme == "file":
        return LocalStorage(root_uri)
    if scheme == "hdfs":
        import getpass

        return WebHdfsStorage(root_uri, webhdfs_endpoints, user or getpass.getuser())
    raise ConfigError(f"storage root {root_uri!r} has unknown scheme {scheme!r}: use file:// or hdfs://")
