"""Read manifests and indexes into the descriptors they reference, and classify them.

Manifests are stored and served byte-exact; this module only reads them. It never relies on
a top-level `mediaType` (oras-go v1 and Sylabs library manifests have none) and never rejects
an unusual config type: a SIF pushed as a Docker v2 manifest is still a SIF.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mirror.errors import DigestInvalid
from mirror.reference import INDEX_MEDIA_TYPES, OCI_MANIFEST, SIF_LAYER_TYPES, Digest


class Kind(str, Enum):
    IMAGE = "image"
    INDEX = "index"
    SIF = "sif"
    ARTIFACT = "artifact"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: dict | None = None
    annotations: dict | None = None


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    kind: Kind
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()  # children of an index
    annotations: dict = field(default_factory=dict)
    subject: Descriptor | None = None  # the manifest this one refers to (OCI 1.1)

    @property
    def blob_digests(self) -> list[Digest]:
        """Blobs this manifest lets its repository serve (config and layers)."""
        return [d.digest for d in ((self.config,) if self.config else ()) + self.layers]


def parse(manifest_bytes: bytes, media_type: str) -> ParsedManifest:
    """Parse manifest bytes served with `media_type`; unparsable content is Kind.UNKNOWN."""
    try:
        doc = json.loads(manifest_bytes)
    except (ValueError, UnicodeDecodeError):
        return ParsedManifest(Kind.UNKNOWN)
    if not isinstance(doc, dict):
        return ParsedManifest(Kind.UNKNOWN)
    found = doc.get("annotations")
    annotations: dict[str, Any] = found if isinstance(found, dict) else {}
    subject = next(iter(_descriptors([doc.get("subject")])), None)
    if (
        media_type in INDEX_MEDIA_TYPES
        or doc.get("mediaType") in INDEX_MEDIA_TYPES
        or ("manifests" in doc and "layers" not in doc)
    ):
        children = tuple(_descriptors(doc.get("manifests")))
        return ParsedManifest(
            Kind.INDEX, manifests=children, annotations=annotations, subject=subject
        )
    config = next(iter(_descriptors([doc.get("config")])), None)
    layers = tuple(_descriptors(doc.get("layers")))
    if len(layers) == 1 and layers[0].media_type in SIF_LAYER_TYPES:
        kind = Kind.SIF
    elif config is not None and _is_image_config(config.media_type):
        kind = Kind.IMAGE
    elif config is not None or layers:
        kind = Kind.ARTIFACT
    else:
        kind = Kind.UNKNOWN
    return ParsedManifest(kind, config, layers, annotations=annotations, subject=subject)


def declared_media_type(manifest_bytes: bytes) -> str:
    """What a manifest sent without a Content-Type is: its own `mediaType`, else OCI
    manifest (what oras-go v1 wrote without a mediaType field)."""
    try:
        doc = json.loads(manifest_bytes)
        media_type = doc.get("mediaType") if isinstance(doc, dict) else None
    except (ValueError, UnicodeDecodeError):
        media_type = None
    return media_type if isinstance(media_type, str) and media_type else OCI_MANIFEST


def _is_image_config(media_type: str) -> bool:
    return media_type in (
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    )


def _descriptors(items: object) -> list[Descriptor]:
    """Well-formed descriptors of a list; malformed entries are skipped, never fatal."""
    found = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        try:
            digest = Digest.parse(str(item.get("digest", "")))
        except DigestInvalid:
            continue
        size = item.get("size")
        platform = item.get("platform")
        annotations = item.get("annotations")
        found.append(
            Descriptor(
                media_type=str(item.get("mediaType", "")),
                digest=digest,
                size=size if isinstance(size, int) and not isinstance(size, bool) else -1,
                platform=platform if isinstance(platform, dict) else None,
                annotations=annotations if isinstance(annotations, dict) else None,
            )
        )
    return found


def closure(
    digest: Digest, read: Callable[[Digest], bytes | None]
) -> tuple[list[Digest], list[Digest]]:
    """Everything a manifest holds on to: (the manifest and its index children, the
    configs and layers they reference), each once. A manifest `read` cannot return is
    listed but not walked, so callers decide what a missing piece means."""
    manifests: list[Digest] = []
    blobs: list[Digest] = []
    seen: set[str] = set()
    pending = [digest]
    while pending:
        current = pending.pop()
        if current.hex in seen:
            continue
        seen.add(current.hex)
        manifests.append(current)
        body = read(current)
        if body is None:
            continue
        parsed = parse(body, "")
        pending += [child.digest for child in parsed.manifests]
        for blob in parsed.blob_digests:
            if blob.hex not in seen:
                seen.add(blob.hex)
                blobs.append(blob)
    return manifests, blobs


def platform_text(platform: object) -> str:
    """`os/architecture[/variant]` of a descriptor's or config's platform, or ""."""
    if not isinstance(platform, dict):
        return ""
    parts = [_text(platform.get(key)) for key in ("os", "architecture", "variant")]
    if not (parts[0] and parts[1]):
        return ""
    return "/".join(part for part in parts if part)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
