"""Errors the library raises; each message names the value that is wrong."""

from __future__ import annotations


class TfshipError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(TfshipError, ValueError):
    """A setting, Param or URI has a value we cannot use."""


class StorageError(TfshipError, OSError):
    """A storage backend could not do what was asked (unreachable, missing, refused)."""


class PathEscapeError(ConfigError):
    """A relative path tried to leave the storage root."""


class PreprocessError(TfshipError):
    """The day's partition cannot be turned into features; the message says which file or path."""
