"""Small OCI building blocks shared by the seeding client and the fault injector.

Everything here is pure computation (no I/O): media-type constants, sha256 digests,
descriptors in the field order the various Go producers emit, Go-style compact JSON, and
deterministic pseudo-random content so every test run sees the same bytes without storing
fixtures in the repository.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

# --- media types --------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

SIF_CONFIG = "application/vnd.sylabs.sif.config.v1+json"
SIF_LAYER = "application/vnd.sylabs.sif.layer.v1.sif"
ORAS_UNKNOWN_CONFIG = "application/vnd.unknown.config.v1+json"

TITLE_ANNOTATION = "org.opencontainers.image.title"

#: Every manifest type the seeded registry holds; send this as Accept to get any of them.
ALL_MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
ACCEPT_ALL_MANIFESTS = ",".join(ALL_MANIFEST_TYPES)

# --- digests and descriptors --------------------------------------------------------------

DescriptorOrder = Literal["image-spec", "ggcr"]
"""Key order of a descriptor: ``image-spec`` (mediaType, digest, size), as written by
containerd / oras-go v1, or ``ggcr`` (mediaType, size, digest), as written by
go-containerregistry and Docker's distribution structs."""


def sha256_digest(data: bytes) -> str:
    """Return the OCI digest string ``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(
    media_type: str,
    digest: str,
    size: int,
    *,
    order: DescriptorOrder = "image-spec",
    annotations: dict[str, str] | None = None,
    platform: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Build a descriptor dict whose insertion order matches the chosen Go producer.

    Order matters because manifests are hashed byte for byte: the same content with
    another key order is another digest, exactly as with real clients.
    """
    if order == "ggcr":
        desc: dict[str, Any] = {"mediaType": media_type, "size": size, "digest": digest}
    else:
        desc = {"mediaType": media_type, "digest": digest, "size": size}
    if annotations:
        desc["annotations"] = dict(annotations)
    if platform:
        desc["platform"] = dict(platform)
    return desc


def descriptor_for(media_type: str, data: bytes, **kwargs: Any) -> dict[str, Any]:
    """Descriptor of in-memory ``data`` (digest and size computed here)."""
    return descriptor(media_type, sha256_digest(data), len(data), **kwargs)


def go_json(value: Any) -> bytes:
    """Serialise like Go's ``encoding/json``: compact, UTF-8, with ``<``, ``>`` and ``&``
    escaped as ``\\u003c``, ``\\u003e`` and ``\\u0026``.

    Those three characters can only occur inside JSON strings, so a plain textual
    replacement after dumping is exact.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode("utf-8")


# --- deterministic content ----------------------------------------------------------------

CHUNK_SIZE = 1 << 20


def iter_deterministic(seed: str, size: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield ``size`` pseudo-random bytes derived from ``seed``, ``chunk_size`` at a time.

    Chunk ``i`` is SHAKE-256 of ``"<seed>/<i>"``, so the stream is the same on every
    machine and every Python version, can be regenerated cheaply (to compute a digest
    first and upload second without holding the data), and a chunk can be produced on its
    own. ``chunk_size`` is part of the definition: keep the default to get the same bytes
    as :func:`deterministic_bytes`.
    """
    index = 0
    remaining = size
    while remaining > 0:
        n = min(chunk_size, remaining)
        yield hashlib.shake_256(f"{seed}/{index}".encode()).digest(chunk_size)[:n]
        remaining -= n
        index += 1


def deterministic_bytes(seed: str, size: int) -> bytes:
    """All of :func:`iter_deterministic` as one ``bytes`` object (for small blobs)."""
    return b"".join(iter_deterministic(seed, size))


def digest_of_stream(chunks: Iterator[bytes]) -> tuple[str, int]:
    """Return ``(digest, size)`` of a stream of chunks without keeping them."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


class StreamedBlob(Protocol):
    """A blob too big to hold in memory: pushed from a stream of chunks."""

    @property
    def digest(self) -> str: ...

    @property
    def size(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...


class DeterministicBlob:
    """A blob too big to keep around: its bytes are regenerated from ``seed`` on demand.

    Used for the 64 MiB seed layer, which is streamed to the registry, and by tests that
    need to compare a download against the original without holding it in memory.
    """

    def __init__(self, seed: str, size: int) -> None:
        self.seed = seed
        self.size = size
        self._digest: str | None = None

    def chunks(self) -> Iterator[bytes]:
        return iter_deterministic(self.seed, self.size)

    @property
    def digest(self) -> str:
        """sha256 of the content (computed once, by streaming)."""
        if self._digest is None:
            self._digest, _ = digest_of_stream(self.chunks())
        return self._digest


# --- image parts: layers, configs, manifests -----------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A gzip-compressed tar layer and what an image config says about it."""

    data: bytes
    diff_id: str
    created_by: str


def make_layer(seed: str, files: dict[str, int], created_by: str) -> Layer:
    """A reproducible ``.tar.gz`` layer holding ``files`` (path -> size) of pseudo-random
    content, with fixed owners and timestamps; ``diff_id`` is the sha256 of the tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, size in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = size, 0o755, 0
            tar.addfile(info, io.BytesIO(deterministic_bytes(f"{seed}:{path}", size)))
    raw = buffer.getvalue()
    return Layer(gzip.compress(raw, compresslevel=6, mtime=0), sha256_digest(raw), created_by)


@dataclass(frozen=True)
class ImageConfigSpec:
    """The human-facing fields of an image config; :func:`image_config` adds the rest."""

    title: str
    version: str
    description: str = ""
    architecture: str = "amd64"
    os: str = "linux"
    variant: str | None = None
    created: str = "2024-05-01T12:00:00Z"
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] = ("/bin/sh",)
    working_dir: str = "/"
    user: str = ""
    extra_labels: tuple[tuple[str, str], ...] = ()

    def labels(self) -> dict[str, str]:
        labels = {
            "org.opencontainers.image.title": self.title,
            "org.opencontainers.image.description": self.description,
            "org.opencontainers.image.version": self.version,
            "org.opencontainers.image.created": self.created,
            "org.opencontainers.image.source": f"https://git.example.org/hpc/{self.title}",
            "org.opencontainers.image.licenses": "BSD-3-Clause",
            "org.opencontainers.image.vendor": "HPC Mirror Test Site",
            "org.opencontainers.image.authors": "hpc-support@example.org",
            "org.opencontainers.image.revision": hashlib.sha1(self.title.encode()).hexdigest(),
        }
        labels.update(self.extra_labels)
        return labels


def image_config(spec: ImageConfigSpec, diff_ids: list[str], history: list[str]) -> bytes:
    """A real image config JSON (image-spec field order), as Go would serialise it."""
    run_config: dict[str, Any] = {"Env": list(spec.env)}
    if spec.user:
        run_config = {"User": spec.user, **run_config}
    if spec.entrypoint:
        run_config["Entrypoint"] = list(spec.entrypoint)
    run_config["Cmd"] = list(spec.cmd)
    run_config["WorkingDir"] = spec.working_dir
    run_config["Labels"] = spec.labels()
    config: dict[str, Any] = {"created": spec.created, "architecture": spec.architecture}
    if spec.variant:
        config["variant"] = spec.variant
    config["os"] = spec.os
    config["config"] = run_config
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config["history"] = [
        {"created": spec.created, "created_by": step, "comment": "buildkit.dockerfile.v0"}
        for step in history
    ]
    return go_json(config)


def image_manifest(
    media_type: str | None,
    config: dict[str, Any],
    layers: list[dict[str, Any]],
    annotations: dict[str, str] | None = None,
) -> bytes:
    """An image manifest (OCI or Docker schema2). ``media_type=None`` leaves the
    top-level ``mediaType`` out, as oras-go v1 does."""
    manifest: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        manifest["mediaType"] = media_type
    manifest["config"] = config
    manifest["layers"] = layers
    if annotations:
        manifest["annotations"] = annotations
    return go_json(manifest)


def index_manifest(media_type: str, children: list[dict[str, Any]]) -> bytes:
    """An OCI index or Docker manifest list over child descriptors with ``platform``."""
    return go_json({"schemaVersion": 2, "mediaType": media_type, "manifests": children})
