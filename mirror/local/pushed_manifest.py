"""What a pushed manifest is, checked before anything is stored: a kind the pull side
serves (OCI image manifest or index, Docker schema2 manifest or list, which covers SIF
artifacts of every Apptainer generation), with well-formed descriptors; MANIFEST_INVALID
otherwise. Its bytes are kept exactly as sent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mirror.errors import DigestInvalid, ManifestInvalid
from mirror.manifests import ParsedManifest
from mirror.manifests import parse as parse_manifest
from mirror.reference import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Digest,
)

PUSHABLE_MEDIA_TYPES = frozenset({OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST})
# Content-Types that say nothing about the manifest: its own mediaType (or shape) does.
_UNTYPED = frozenset({"", "application/json", "application/octet-stream"})


@dataclass(frozen=True, slots=True)
class PushedManifest:
    """A manifest as pushed: its digest, media type, bytes and what it references."""

    digest: Digest
    media_type: str
    body: bytes
    parsed: ParsedManifest
    subject: Digest | None  # the manifest it refers to (OCI 1.1 `subject`), if any
    artifact_type: str | None  # what the referrers API lists it as
    annotations: dict[str, Any]

    def referrer_descriptor(self) -> dict[str, Any]:
        """Its entry in the referrers index of its subject."""
        entry: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": len(self.body),
        }
        if self.artifact_type:
            entry["artifactType"] = self.artifact_type
        if self.annotations:
            entry["annotations"] = self.annotations
        return entry


def read_pushed_manifest(body: bytes, digest: Digest, content_type: str) -> PushedManifest:
    """The manifest `body` (whose sha256 is `digest`) sent with `content_type`. The
    Content-Type names the media type; without one (or a generic one), the body's own
    `mediaType` does, else its shape (oras-go v1 wrote no mediaType field)."""
    doc = _json_object(body)
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalid("only manifests of schemaVersion 2 are taken")
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("the manifest's mediaType is not a string")
    header = content_type.partition(";")[0].strip().lower()
    media_type = header if header not in _UNTYPED else declared or _shape(doc)
    if media_type not in PUSHABLE_MEDIA_TYPES:
        raise ManifestInvalid(
            f"{media_type[:100]!r} is not a manifest type this registry takes "
            f"(it takes {', '.join(sorted(PUSHABLE_MEDIA_TYPES))})"
        )
    if declared and declared != media_type:
        raise ManifestInvalid(
            f"the Content-Type {media_type} is not the manifest's mediaType {declared[:100]}"
        )
    is_index = media_type in INDEX_MEDIA_TYPES
    if is_index:
        _check_descriptors(doc, "manifests")
    else:
        _check_descriptors(doc, "config", single=True)
        _check_descriptors(doc, "layers")
    _check_descriptors(doc, "subject", single=True, required=False)
    annotations = doc.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise ManifestInvalid("the manifest's annotations are not an object")
    artifact_type = doc.get("artifactType")
    if not isinstance(artifact_type, str) or not artifact_type:
        config = doc.get("config")
        artifact_type = None if is_index or not isinstance(config, dict) else config["mediaType"]
    parsed = parse_manifest(body, media_type)
    subject = parsed.subject.digest if parsed.subject is not None else None
    return PushedManifest(
        digest, media_type, body, parsed, subject, artifact_type, annotations or {}
    )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ManifestInvalid("the manifest is not JSON") from None
    if not isinstance(doc, dict):
        raise ManifestInvalid("the manifest is not a JSON object")
    return doc


def _shape(doc: dict[str, Any]) -> str:
    return OCI_INDEX if "manifests" in doc and "layers" not in doc else OCI_MANIFEST


def _check_descriptors(
    doc: dict[str, Any], field: str, *, single: bool = False, required: bool = True
) -> None:
    """Check `field` (one descriptor, or a list of them) whole: a descriptor the pull side
    would skip must not be stored unverified."""
    value = doc.get(field)
    if value is None and not required:
        return
    items = [value] if single else value
    if not isinstance(items, list):
        raise ManifestInvalid(f"the manifest's {field} is missing or not a list")
    for item in items:
        if not isinstance(item, dict):
            raise ManifestInvalid(f"the manifest's {field} holds something not a descriptor")
        size = item.get("size")
        if not isinstance(item.get("mediaType"), str) or not (
            isinstance(size, int) and not isinstance(size, bool) and size >= 0
        ):
            raise ManifestInvalid(f"a descriptor of the manifest's {field} lacks mediaType or size")
        try:
            Digest.parse(str(item.get("digest", "")))
        except DigestInvalid as exc:
            raise ManifestInvalid(
                f"a descriptor of the manifest's {field}: {exc.message}"
            ) from None
