"""Local images written straight into a store, the way a finished push leaves them: blobs
and manifest stored, linked to the repository, tagged, with a push record and (for an
artifact with a `subject`) a referrer entry. For tests of what reads local images (gc,
the catalog) without the push API."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.cache.store import ContentStore, PushRecord, TagRecord
from mirror.reference import Digest, Repository

from . import oci


@dataclass(frozen=True)
class LocalImage:
    """What `push_image` stored: the manifest, and the config and layers it names."""

    repo: Repository
    tag: str | None
    digest: Digest
    media_type: str
    manifest: bytes
    blobs: dict[str, bytes]  # "sha256:<hex>" -> content: config and layers
    artifact_type: str | None = None

    @property
    def descriptor(self) -> dict[str, Any]:
        """The manifest's descriptor, as an index or the referrers API lists it."""
        return {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": len(self.manifest),
        }

    @property
    def held(self) -> set[str]:
        """Hex digests of everything it holds on to: the manifest, config and layers."""
        return {self.digest.hex} | {text.split(":")[1] for text in self.blobs}


def push_image(
    store: ContentStore,
    repo: Repository,
    tag: str | None,
    layers: list[bytes],
    user: str | None,
    at: float,
    *,
    subject: LocalImage | None = None,
    artifact_type: str | None = None,
    config: bytes = b"{}",
    config_type: str = oci.OCI_CONFIG,
    layer_type: str = oci.OCI_LAYER_TAR,
    annotations: dict[str, str] | None = None,
) -> LocalImage:
    """Store an OCI manifest of `layers` in `repo` as pushed by `user` at `at` (Unix
    seconds), tagged `tag` (None: pushed by digest); with `subject`, it is a referrer of
    that image (a signature, an SBOM) of type `artifact_type`."""
    config_desc = oci.descriptor_for(config_type, config)
    layer_descs = [oci.descriptor_for(layer_type, layer) for layer in layers]
    body: dict[str, Any] = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST}
    if artifact_type:
        body["artifactType"] = artifact_type
    body["config"] = config_desc
    body["layers"] = layer_descs
    if subject is not None:
        body["subject"] = subject.descriptor
    if annotations:
        body["annotations"] = annotations
    blobs = {config_desc["digest"]: config, **{d["digest"]: b for d, b in zip(layer_descs, layers)}}
    image = store_manifest(store, repo, tag, oci.OCI_MANIFEST, oci.go_json(body), blobs, user, at)
    if subject is not None:
        descriptor = {**image.descriptor, "artifactType": artifact_type or config_type}
        if annotations:
            descriptor["annotations"] = annotations
        store.link_referrer(repo, subject.digest, image.digest, descriptor)
    return dataclasses.replace(image, artifact_type=artifact_type)


def push_sif(
    store: ContentStore, repo: Repository, tag: str, sif: bytes, user: str | None, at: float
) -> LocalImage:
    """Store a SIF as Apptainer 1.3.1-1.5 pushes it: an OCI manifest, the SIF config type
    with `{}`, and the whole file as the one layer."""
    return push_image(
        store,
        repo,
        tag,
        [sif],
        user,
        at,
        config_type=oci.SIF_CONFIG,
        layer_type=oci.SIF_LAYER,
    )


def push_index(
    store: ContentStore,
    repo: Repository,
    tag: str,
    children: list[tuple[LocalImage, str]],
    user: str | None,
    at: float,
) -> LocalImage:
    """Store an OCI index over `children` (each image with its `os/arch`)."""
    entries = []
    for child, platform in children:
        os_name, arch = platform.split("/")
        entries.append({**child.descriptor, "platform": {"architecture": arch, "os": os_name}})
    manifest = oci.index_manifest(oci.OCI_INDEX, entries)
    return store_manifest(store, repo, tag, oci.OCI_INDEX, manifest, {}, user, at)


def store_manifest(
    store: ContentStore,
    repo: Repository,
    tag: str | None,
    media_type: str,
    manifest: bytes,
    blobs: dict[str, bytes],
    user: str | None,
    at: float,
) -> LocalImage:
    """Blobs and manifest stored and linked, the tag written, the push recorded."""
    for text, content in blobs.items():
        digest = Digest.parse(text)
        store.put_bytes(digest, content)
        store.link_blob(repo, digest)
    digest = Digest.parse(oci.sha256_digest(manifest))
    store.put_bytes(digest, manifest)
    store.link_manifest(repo, digest, media_type)
    if tag is not None:
        store.write_tag(repo, tag, TagRecord(digest, media_type, at))
    store.write_push_record(repo, digest, PushRecord(user, at))
    return LocalImage(repo, tag, digest, media_type, manifest, blobs)


def upload_blob(store: ContentStore, repo: Repository, content: bytes, user: str | None) -> Digest:
    """A blob pushed on its own (its manifest still to come): stored and linked."""
    digest = Digest.parse(oci.sha256_digest(content))
    store.put_bytes(digest, content)
    store.link_blob(repo, digest)
    return digest


def start_upload(store: ContentStore, repo: Repository, data: bytes, at: float) -> str:
    """An upload session holding `data` so far, last touched at `at`."""
    record = store.start_upload(repo, "alice", at)
    path = store.upload_data_path(record.upload_id)
    path.write_bytes(data)
    for touched in path.parent.iterdir():
        os.utime(touched, (at, at))
    os.utime(path.parent, (at, at))
    return record.upload_id


def backdate(store: ContentStore, at: float) -> None:
    """Make everything stored so far (blobs, links, records) look written at `at`."""
    for path in Path(store.root).rglob("*"):
        if path.is_file():
            os.utime(path, (at, at))
