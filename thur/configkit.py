"""The error every config loader raises and the two checks every section starts with.

Apart from thur/config.py so that section parsers in other modules
(thur/storage_config.py) can use them without an import cycle.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"config key '{key}': {value!r} is not allowed: {allowed}")
        self.key = key


def as_mapping(raw: object, key: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(key, raw, "a mapping of keys to values")
    return raw


def reject_unknown(section: dict[str, Any], prefix: str, known: set[str]) -> None:
    for name in section:
        if name not in known:
            raise ConfigError(
                f"{prefix}{name}", section[name], f"unknown key; known: {sorted(known)}"
            )
