"""Pushing into a mirror's local namespace from tests: blobs placed in the store the way a
finished upload leaves them (stored, then linked to the repository), manifests PUT over
HTTP, and the manifest shapes every SIF-pushing client generation writes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from mirror.cache.store import ContentStore
from mirror.reference import Digest, Repository
from tests.support import oci

LOCAL_PREFIX = "local"
SIF_CONFIG_NO_JSON = "application/vnd.sylabs.sif.config.v1"  # SingularityCE 3.8.0-3.8.3
SIF_LAYER_LEGACY = "appliciation/vnd.sylabs.sif.layer.tar"  # sic: Singularity <= 3.6


def place_blob(cache_root: Path, name: str, data: bytes) -> str:
    """Store `data` and link it to `local/<name>`, as a verified upload ends; its digest."""
    store = ContentStore(cache_root)
    digest = Digest(hashlib.sha256(data).hexdigest())
    store.put_bytes(digest, data)
    store.link_blob(Repository(LOCAL_PREFIX, name), digest)
    return str(digest)


def put_manifest(
    proxy: Any, name: str, reference: str, body: bytes, media_type: str | None, auth: Any
) -> requests.Response:
    headers = {"Content-Type": media_type} if media_type else {}
    return requests.put(
        f"{proxy.url}/v2/{LOCAL_PREFIX}/{name}/manifests/{reference}",
        data=body,
        headers=headers,
        auth=auth,
        timeout=60,
    )


@dataclass(frozen=True)
class Shape:
    """One way a client writes an image manifest: what the PUT carries and which blobs."""

    label: str
    put_type: str | None  # the PUT's Content-Type (None: no header)
    manifest: bytes
    blobs: tuple[bytes, ...]

    @property
    def served_type(self) -> str:
        return self.put_type or oci.OCI_MANIFEST


def _shape(
    label: str,
    put_type: str | None,
    manifest_type: str | None,
    config: tuple[str, bytes],
    layer: tuple[str, bytes],
    order: oci.DescriptorOrder = "image-spec",
    **extra: Any,
) -> Shape:
    config_desc = oci.descriptor_for(config[0], config[1], order=order)
    config_desc.update(extra.pop("config_extra", {}))
    layer_desc = oci.descriptor_for(
        layer[0], layer[1], order=order, annotations={oci.TITLE_ANNOTATION: "tool.sif"}
    )
    doc: dict[str, Any] = {"schemaVersion": 2}
    if manifest_type is not None:
        doc["mediaType"] = manifest_type
    doc.update(config=config_desc, layers=[layer_desc], **extra)
    return Shape(label, put_type, oci.go_json(doc), (config[1], layer[1]))


def image_shapes(seed: str) -> list[Shape]:
    """Every image manifest shape the pull side serves: OCI and Docker images, and a SIF
    artifact as each Apptainer/Singularity generation pushes it (sif-oras-facts.md A1)."""
    sif = b"SIF_MAGIC" + oci.deterministic_bytes(f"{seed}-sif", 4000)
    layer = oci.make_layer(seed, {"bin/tool": 3000}, "COPY tool /bin/")
    config = oci.image_config(oci.ImageConfigSpec(title=seed, version="1"), [layer.diff_id], [])
    return [
        _shape("oci-image", oci.OCI_MANIFEST, oci.OCI_MANIFEST, (oci.OCI_CONFIG, config),
               (oci.OCI_LAYER_TAR_GZIP, layer.data)),
        _shape("docker-image", oci.DOCKER_MANIFEST, oci.DOCKER_MANIFEST,
               (oci.DOCKER_CONFIG, config), (oci.DOCKER_LAYER_TAR_GZIP, layer.data), "ggcr"),
        _shape("singularity-3.6", oci.OCI_MANIFEST, oci.OCI_MANIFEST, (oci.SIF_CONFIG, b""),
               (SIF_LAYER_LEGACY, sif)),
        _shape("singularity-3.7", oci.OCI_MANIFEST, oci.OCI_MANIFEST, (oci.SIF_CONFIG, b""),
               (oci.SIF_LAYER, sif)),
        _shape("singularityce-3.8.0", oci.OCI_MANIFEST, oci.OCI_MANIFEST,
               (SIF_CONFIG_NO_JSON, b""), (oci.SIF_LAYER, sif)),
        _shape("oras-go-v1", oci.OCI_MANIFEST, None, (oci.ORAS_UNKNOWN_CONFIG, b"{}"),
               (oci.SIF_LAYER, sif)),
        _shape("apptainer-1.3.0", oci.DOCKER_MANIFEST, oci.DOCKER_MANIFEST,
               (oci.SIF_CONFIG, b"{}"), (oci.SIF_LAYER, sif), "ggcr"),
        _shape("apptainer-1.3.1", oci.OCI_MANIFEST, oci.OCI_MANIFEST, (oci.SIF_CONFIG, b"{}"),
               (oci.SIF_LAYER, sif), "ggcr"),
        _shape("apptainer-main", oci.OCI_MANIFEST, oci.OCI_MANIFEST, (oci.SIF_CONFIG, b"{}"),
               (oci.SIF_LAYER, sif), "ggcr", config_extra={"data": "e30="},
               annotations={"org.opencontainers.image.created": "2023-12-19T16:02:14Z"}),
        _shape("artifact-type", oci.OCI_MANIFEST, oci.OCI_MANIFEST, (oci.SIF_CONFIG, b"{}"),
               (oci.SIF_LAYER, sif), "ggcr", artifactType="application/vnd.sylabs.sif.v1"),
        _shape("no-content-type", None, oci.OCI_MANIFEST, (oci.SIF_CONFIG, b"{}"),
               (oci.SIF_LAYER, sif)),
    ]  # fmt: skip


def push_shape(proxy: Any, name: str, reference: str, shape: Shape, auth: Any) -> str:
    """Place `shape`'s blobs and PUT its manifest; the manifest's digest."""
    for blob in shape.blobs:
        place_blob(proxy.cache_root, name, blob)
    response = put_manifest(proxy, name, reference, shape.manifest, shape.put_type, auth)
    assert response.status_code == 201, response.text
    return response.headers["Docker-Content-Digest"]
