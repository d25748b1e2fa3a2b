"""Site-wide defaults for the DAG's Params, so each environment (CI, staging, prod) tunes its scheduled runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param
from airflow.sdk.exceptions import ParamValidationError

from tfship.config import PARAM_DEFAULTS_ENV
from tfship.errors import ConfigError

# A site default for these would make every scheduled run train one day, or skip the gate.
PER_RUN_ONLY = frozenset({"day", "force_publish"})


def with_site_defaults(params: Mapping[str, Param], overrides: Mapping[str, Any]) -> dict[str, Param]:
    """The Params with defaults replaced from `Settings.param_defaults` (TFSHIP_PARAM_DEFAULTS), each checked.

    Scheduled runs cannot carry conf, so this is how an environment sets their knobs (fewer
    epochs in CI, say). A name that is not a Param or a value its schema refuses stops the parse
    with a message naming both: a typo must not silently leave the built-in default in force.
    """
    if not overrides:
        return dict(params)
    pinned = sorted(set(overrides) & PER_RUN_ONLY)
    if pinned:
        raise ConfigError(f"{PARAM_DEFAULTS_ENV} may not set {pinned}: they belong to one manual run, not every run")
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise ConfigError(f"{PARAM_DEFAULTS_ENV} names no such Param: {unknown} (known: {sorted(params)})")
    merged = dict(params)
    for name, value in overrides.items():
        base = params[name]
        param = Param(value, description=base.description, **base.schema)
        try:
            param.resolve()
        except ParamValidationError as err:
            raise ConfigError(f"{PARAM_DEFAULTS_ENV}: {name}={value!r} is refused by its schema: {err}") from None
        merged[name] = param
    return merged
