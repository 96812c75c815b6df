"""A loaded `Config` written back as TOML: the effective configuration `mirror check-config`
prints, every key of every table with its value after merging and defaults.

Loading the text again gives the same `Config`. A secret never appears: its field is left out
and the key it is read from (`password_env`, `password_file`) is shown, its value as `***`.
"""

from __future__ import annotations

import enum
import re
import typing
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from mirror.config import (
    AccessRule,
    CatalogConfig,
    Config,
    LocalConfig,
    SecretSource,
    UpstreamConfig,
)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def to_toml(config: Config) -> str:
    """The whole effective configuration, upstreams last, with a heading naming its source."""
    lines = [f"# effective configuration (from {config.source}); secrets show as ***", ""]
    for field in fields(config):
        value = getattr(config, field.name)
        if is_dataclass(value):
            lines += _table(field.name, value)
    for upstream in config.upstreams:
        lines += _table(f"upstreams.{_key(upstream.name)}", upstream)
    return "\n".join(lines)


def _table(header: str, section: Any) -> list[str]:
    """`[header]` with the keys of one config dataclass, then its sub-tables."""
    lines = [f"[{header}]"]
    subtables: list[str] = []
    for key, value in _entries(section):
        if isinstance(value, SecretSource):
            secret = value.key.rsplit("_", 1)[0]  # password_file -> password
            lines.append(f"{value.key} = {_value(value.value)}  # {secret}: ***")
        elif is_dataclass(value):
            subtables += _table(f"{header}.{key}", value)
        elif key == "rules":
            for rule in value:
                entries = [f"{name} = {_value(item)}" for name, item in _rule_entries(rule)]
                subtables += [f"[[{header}.rules]]", *entries, ""]
        else:
            lines.append(f"{key} = {_value(value)}")
    return [*lines, "", *subtables]


def _entries(section: Any) -> Iterator[tuple[str, Any]]:
    """(key, value) of a config dataclass as its TOML table names them. A secret (a field
    hidden from repr) is replaced by its `<field>_source`; absent optional parts (a None
    sub-table or source) are left out."""
    hints = typing.get_type_hints(type(section))
    for field in fields(section):
        value = getattr(section, field.name)
        if not field.repr:
            source = getattr(section, f"{field.name}_source")
            if source is not None:
                yield field.name, source
            continue
        if field.name.endswith("_source"):
            continue  # written in place of its secret
        if value is None and _is_optional_part(hints[field.name]):
            continue
        if isinstance(section, UpstreamConfig) and field.name in ("name", "offline", "access"):
            yield from _upstream_entry(field.name, section)
        elif isinstance(section, LocalConfig) and field.name == "access":
            yield from _rule_entries(section.access)  # spread like an upstream's own
        elif isinstance(section, CatalogConfig) and field.name == "https":
            yield "tls", "on" if value else "off"
        else:
            yield field.name, value


def _is_optional_part(hint: Any) -> bool:
    """`SomeDataclass | None`: left out when None (a path that is None is written as "")."""
    return any(is_dataclass(arg) for arg in typing.get_args(hint))


def _upstream_entry(name: str, upstream: UpstreamConfig) -> Iterator[tuple[str, Any]]:
    """The upstream fields whose TOML keys differ: its name is the table's, `offline` is
    `mode`, and its own access rule is spread over `access`, `users`, `groups`."""
    if name == "offline":
        yield "mode", "offline" if upstream.offline else "online"
    elif name == "access":
        yield from _rule_entries(upstream.access)


def _rule_entries(rule: AccessRule) -> Iterator[tuple[str, Any]]:
    if rule.repositories:
        yield "repositories", rule.repositories
    yield "access", rule.access
    yield "users", rule.users
    yield "groups", rule.groups


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _value(name)


def _value(value: Any) -> str:
    """A TOML value: None is the empty string the config files use for "not set"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # 300.0 reads better as 300 and loads back as the same number; the loader refuses
        # nan and inf, so every float here has a TOML form.
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    if isinstance(value, enum.Enum):
        return _value(value.value)
    if isinstance(value, (frozenset, set)):
        return _value(sorted(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if value is None:
        return '""'
    if isinstance(value, (str, Path)):
        return _string(str(value))
    raise TypeError(f"no TOML form for {value!r}")


def _string(text: str) -> str:
    """A TOML basic string: quote, backslash and control characters escaped."""
    return '"' + "".join(_ESCAPES.get(char) or _char(char) for char in text) + '"'


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _char(char: str) -> str:
    return f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F else char
