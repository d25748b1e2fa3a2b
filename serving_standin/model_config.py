"""The `--model_config_file` text protobuf (ModelServerConfig), read the way the stand-in needs it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<comment>\#[^\n]*)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<punct>[{}<>:;,\[\]])
      | (?P<word>[A-Za-z0-9_.+\-]+)
    )""",
    re.VERBOSE,
)


class ConfigSyntaxError(ValueError):
    """The text protobuf cannot be read; the message names the position."""


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ConfigSyntaxError(f"unexpected character {text[position:].strip()[:1]!r} at offset {position}")
        position = match.end()
        if match.group("comment"):
            continue
        tokens.append(match.group("string") or match.group("punct") or match.group("word"))
    return tokens


def parse_text_proto(text: str) -> dict[str, list[Any]]:
    """Fields -> list of values (str/int/float/bool for scalars, dicts for messages)."""
    tokens = _tokens(text)
    position = 0

    def message(closing: str | None) -> dict[str, list[Any]]:
        nonlocal position
        fields: dict[str, list[Any]] = {}
        while position < len(tokens):
            token = tokens[position]
            if closing and token == closing:
                position += 1
                return fields
            if token in ";,":
                position += 1
                continue
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token):
                raise ConfigSyntaxError(f"expected a field name, found {token!r}")
            position += 1
            if position < len(tokens) and tokens[position] == ":":
                position += 1
            if position >= len(tokens):
                raise ConfigSyntaxError(f"field {token!r} has no value")
            opener = tokens[position]
            if opener in "{<":
                position += 1
                fields.setdefault(token, []).append(message("}" if opener == "{" else ">"))
            else:
                position += 1
                fields.setdefault(token, []).append(_scalar(opener))
        if closing:
            raise ConfigSyntaxError(f"missing {closing!r} at the end of the file")
        return fields

    return message(None)


def _scalar(token: str) -> Any:
    if token[:1] in "\"'":
        return bytes(token[1:-1], "utf-8").decode("unicode_escape")
    if token in ("true", "True"):
        return True
    if token in ("false", "False"):
        return False
    try:
        return int(token, 0)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        return token  # enum names


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk are aspired: latest N, all, or specific numbers."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def aspired(self, on_disk: list[int]) -> list[int]:
        """The versions to serve among those found on disk."""
        ordered = sorted(on_disk)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.num_versions :] if self.num_versions > 0 else []


@dataclass(frozen=True)
class ModelConfig:
    """One served model."""

    name: str
    base_path: str
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: dict[str, int] = field(default_factory=dict)


def _one(fields: dict[str, list[Any]], name: str, default: Any = None) -> Any:
    values = fields.get(name, [])
    return values[-1] if values else default


def parse_model_config(text: str) -> list[ModelConfig]:
    """ModelServerConfig text -> configs; raises ValueError naming the wrong field."""
    root = parse_text_proto(text)
    unknown = set(root) - {"model_config_list", "custom_model_config"}
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)} in ModelServerConfig")
    configs = []
    for config_list in root.get("model_config_list", []):
        for raw in config_list.get("config", []):
            name = _one(raw, "name", "")
            base_path = _one(raw, "base_path", "")
            platform = _one(raw, "model_platform", "")
            if not name:
                raise ValueError("a model config has no name")
            if platform != "tensorflow":
                raise ValueError(f"model {name!r}: model_platform must be 'tensorflow', got {platform!r}")
            if not base_path.startswith("/") and "://" not in base_path:  # ValidateModelConfigList's words
                raise ValueError(f"Expected model {name} to have an absolute path or URI; got base_path()={base_path}")
            configs.append(ModelConfig(name, base_path.rstrip("/") or "/", _policy(raw, name), _labels(raw, name)))
    names = [c.name for c in configs]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"Illegal to list model {name} multiple times in config list")
    return configs


def _policy(raw: dict[str, list[Any]], name: str) -> VersionPolicy:
    policy = _one(raw, "model_version_policy")
    if not policy:
        return VersionPolicy()
    if "all" in policy:
        return VersionPolicy("all")
    if "specific" in policy:
        versions = tuple(int(v) for v in _one(policy, "specific", {}).get("versions", []))
        if not versions:
            raise ValueError(f"model {name!r}: specific version policy lists no versions")
        return VersionPolicy("specific", versions=versions)
    if "latest" in policy:
        return VersionPolicy("latest", num_versions=int(_one(_one(policy, "latest", {}), "num_versions", 1)))
    raise ValueError(f"model {name!r}: unknown model_version_policy {sorted(policy)}")


def _labels(raw: dict[str, list[Any]], name: str) -> dict[str, int]:
    labels = {}
    for entry in raw.get("version_labels", []):
        key, value = _one(entry, "key"), _one(entry, "value")
        if not key or value is None:
            raise ValueError(f"model {name!r}: a version_labels entry needs key and value")
        labels[str(key)] = int(value)
    return labels
