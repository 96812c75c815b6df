"""The source of a conversion: one platform's image manifest, its config and its layers,
read from the content store and checked before any layer is opened."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.cache.store import ContentStore
from mirror.convert.layers import LAYER_MEDIA_TYPES
from mirror.errors import BlobUnknown, ConversionRefused
from mirror.manifests import Kind, parse
from mirror.reference import Digest


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer blob: its place (1-based), digest, media type and file in the store."""

    number: int
    digest: Digest
    media_type: str
    path: Path


@dataclass(frozen=True)
class SourceImage:
    """What the converter needs of an image; `describe` names it in every error."""

    reference: str  # as the user wrote it, e.g. docker.io/library/alpine:3.20
    manifest_digest: Digest
    config_bytes: bytes
    layers: tuple[Layer, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    labels: dict[str, str]
    architecture: str
    variant: str
    created: str  # RFC 3339 as the config has it, or ""
    container_config: dict[str, Any]  # the config's "config" object (oci-config.json)

    @property
    def describe(self) -> str:
        return f"image {self.reference} ({self.manifest_digest})"

    def layer_error(self, layer: Layer, reason: str) -> ConversionRefused:
        return ConversionRefused(
            f"{self.describe}: layer {layer.number} of {len(self.layers)} "
            f"({layer.digest}): {reason}"
        )


def load_image(store: ContentStore, manifest_digest: Digest, reference: str) -> SourceImage:
    """The image manifest `manifest_digest` and its config from `store`, checked: an image
    (not an index or artifact), a Linux config, every layer of a known tar type and cached."""
    where = f"image {reference} ({manifest_digest})"
    manifest_bytes = store.read_blob(manifest_digest)
    if manifest_bytes is None:
        raise BlobUnknown(f"{where}: the manifest is not cached")
    parsed = parse(manifest_bytes, "")
    if parsed.kind is not Kind.IMAGE or parsed.config is None:
        raise ConversionRefused(
            f"{where}: not an image manifest but {parsed.kind.value}; "
            "convert one platform's manifest"
        )
    config_bytes = store.read_blob(parsed.config.digest)
    if config_bytes is None:
        raise BlobUnknown(f"{where}: the config {parsed.config.digest} is not cached")
    try:
        config = json.loads(config_bytes)
    except (ValueError, UnicodeDecodeError):
        config = None
    if not isinstance(config, dict):
        raise ConversionRefused(f"{where}: the config is not a JSON object")
    if config.get("os", "linux") != "linux":
        raise ConversionRefused(f"{where}: a {config.get('os')!r} image, not a Linux one")
    layers = []
    for number, descriptor in enumerate(parsed.layers, start=1):
        prefix = f"{where}: layer {number} of {len(parsed.layers)} ({descriptor.digest})"
        if descriptor.media_type not in LAYER_MEDIA_TYPES:
            raise ConversionRefused(f"{prefix}: unsupported media type {descriptor.media_type!r}")
        if store.blob_size(descriptor.digest) is None:
            raise BlobUnknown(f"{prefix}: not cached")
        layers.append(
            Layer(
                number, descriptor.digest, descriptor.media_type, store.blob_path(descriptor.digest)
            )
        )
    inner = config.get("config")
    container = inner if isinstance(inner, dict) else {}
    return SourceImage(
        reference=reference,
        manifest_digest=manifest_digest,
        config_bytes=config_bytes,
        layers=tuple(layers),
        entrypoint=_strings(container, "Entrypoint", where),
        cmd=_strings(container, "Cmd", where),
        env=_strings(container, "Env", where),
        labels=_labels(container, where),
        architecture=_text(config.get("architecture")),
        variant=_text(config.get("variant")),
        created=_created(config.get("created")),
        container_config=container,
    )


def _strings(container: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = container.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConversionRefused(f"{where}: config {key} is not a list of strings")
    if any("\0" in item for item in value):
        raise ConversionRefused(f"{where}: config {key} holds a NUL byte")
    return tuple(value)


def _labels(container: dict[str, Any], where: str) -> dict[str, str]:
    value = container.get("Labels")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConversionRefused(f"{where}: config Labels is not a map of strings")
    return dict(value)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _created(value: object) -> str:
    """The config's `created` in UTC RFC 3339 (seconds), or "" when absent or unreadable."""
    if not isinstance(value, str):
        return ""
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
