"""SIF pushes and pulls as each Apptainer/Singularity generation makes them, over plain HTTP
(no apptainer, singularity or oras CLI can be installed here): the manifest bytes each one
writes (../shared/reference/sif-oras-facts.md A1-A4), pushed with oras-go's request
sequence (HEAD blob, POST upload, PUT ?digest=, PUT manifest), and pulled back with the
requests and Accept headers of ggcr (Apptainer >= 1.3) or of containerd's resolver
(Apptainer <= 1.2, Singularity <= 3.11)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

from . import oci
from .seed import RegistryClient

LEGACY_SIF_LAYER = "appliciation/vnd.sylabs.sif.layer.tar"  # sic: Singularity <= 3.6
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
ORAS_UNKNOWN_ARTIFACT = "application/vnd.unknown.artifact.v1"

#: ggcr's Accept on every manifest GET (comma-joined, no spaces).
GGCR_ACCEPT = ",".join(
    (
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        oci.DOCKER_MANIFEST,
        oci.OCI_MANIFEST,
        oci.DOCKER_MANIFEST_LIST,
        oci.OCI_INDEX,
    )
)
#: containerd's resolver (oras-go v1): a HEAD first, comma-space-joined.
CONTAINERD_ACCEPT = ", ".join(
    (oci.DOCKER_MANIFEST, oci.DOCKER_MANIFEST_LIST, oci.OCI_MANIFEST, oci.OCI_INDEX, "*/*")
)


@dataclass(frozen=True)
class SifShape:
    """The manifest one generation writes for a SIF: top-level mediaType (None: absent),
    config type and bytes, layer type, descriptor key order, and the newer extras."""

    generation: str
    manifest_type: str | None
    config_type: str
    config: bytes
    layer_type: str
    order: oci.DescriptorOrder
    inline_config: bool = False  # Apptainer main: `"data":"e30="` in the config descriptor
    artifact_type: str | None = None  # the oras CLI 1.x (image-spec 1.1)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def put_type(self) -> str:
        """The PUT Content-Type: the manifest's type, OCI when the field is absent."""
        return self.manifest_type or oci.OCI_MANIFEST

    @property
    def legacy_pull(self) -> bool:
        """Whether the generation that wrote it pulls with containerd's resolver."""
        return self.order == "image-spec"

    def manifest(self, sif: bytes, title: str) -> bytes:
        config = oci.descriptor_for(self.config_type, self.config, order=self.order)
        if self.inline_config:
            config["data"] = base64.b64encode(self.config).decode()
        layer = oci.descriptor_for(
            self.layer_type, sif, order=self.order, annotations={oci.TITLE_ANNOTATION: title}
        )
        document: dict = {"schemaVersion": 2}
        if self.manifest_type is not None:
            document["mediaType"] = self.manifest_type
        if self.artifact_type is not None:
            document["artifactType"] = self.artifact_type
        document["config"] = config
        document["layers"] = [layer]
        if self.annotations:
            document["annotations"] = dict(self.annotations)
        return oci.go_json(document)


CREATED = {"org.opencontainers.image.created": "2026-11-30T09:00:00Z"}
SHAPES = (
    SifShape("singularity-3.6", oci.OCI_MANIFEST, oci.SIF_CONFIG, b"", LEGACY_SIF_LAYER,
             "image-spec"),
    SifShape("singularity-3.7", oci.OCI_MANIFEST, oci.SIF_CONFIG, b"", oci.SIF_LAYER, "image-spec"),
    SifShape("apptainer-1.2", None, oci.ORAS_UNKNOWN_CONFIG, b"{}", oci.SIF_LAYER, "image-spec"),
    SifShape("apptainer-1.3.0", oci.DOCKER_MANIFEST, oci.SIF_CONFIG, b"{}", oci.SIF_LAYER, "ggcr"),
    SifShape("apptainer-1.4", oci.OCI_MANIFEST, oci.SIF_CONFIG, b"{}", oci.SIF_LAYER, "ggcr"),
    SifShape(
        "apptainer-main", oci.OCI_MANIFEST, oci.SIF_CONFIG, b"{}", oci.SIF_LAYER, "ggcr",
        inline_config=True, annotations=CREATED,
    ),
    SifShape(
        "oras-cli-1", oci.OCI_MANIFEST, OCI_EMPTY, b"{}", oci.SIF_LAYER, "image-spec",
        inline_config=True, artifact_type=ORAS_UNKNOWN_ARTIFACT, annotations=CREATED,
    ),
)  # fmt: skip


def push_sif(
    client: RegistryClient, repository: str, tag: str, shape: SifShape, sif: bytes, title: str
) -> bytes:
    """Push the SIF as `shape`'s generation does: layer, then config, each as HEAD, POST and
    PUT ?digest= (skipped when the HEAD finds it), then the manifest by tag; its bytes."""
    manifest = shape.manifest(sif, title)
    client.push_blob(repository, sif, shape.layer_type)
    client.push_blob(repository, shape.config, shape.config_type)
    client.push_manifest(repository, tag, manifest, shape.put_type)
    return manifest


@dataclass(frozen=True)
class PulledSif:
    manifest: bytes
    content_type: str
    sif: bytes


def pull_like_apptainer(
    client: RegistryClient, repository: str, tag: str, legacy: bool
) -> PulledSif:
    """What `apptainer pull oras://` asks: ggcr GETs the manifest by tag (Accept above), then
    the layer, then the config unless it is inline; containerd's resolver HEADs the tag
    first, then GETs the manifest by the digest the HEAD named, and never the config.
    Asserts every header the client relies on."""
    scope = f"repository:{repository}:pull"
    reference = tag
    if legacy:
        head = client.request(
            "HEAD", f"/v2/{repository}/manifests/{tag}", scope=scope,
            headers={"Accept": CONTAINERD_ACCEPT},
        )  # fmt: skip
        assert head.status_code == 200, head.status_code
        assert head.headers["Content-Type"] == oci.OCI_MANIFEST  # else "unexpected media type"
        reference = head.headers["Docker-Content-Digest"]
    response = client.get_manifest(repository, reference, GGCR_ACCEPT)
    assert response.status_code == 200, response.text
    body = response.content
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert response.headers["Docker-Content-Digest"] == digest
    assert int(response.headers["Content-Length"]) == len(body)
    document = json.loads(body)
    [layer] = document["layers"]
    sif = _blob(client, repository, layer)
    if not legacy and "data" not in document["config"]:
        _blob(client, repository, document["config"])
    return PulledSif(body, response.headers["Content-Type"], sif)


def _blob(client: RegistryClient, repository: str, descriptor: dict) -> bytes:
    response = client.get_blob(repository, descriptor["digest"])
    assert response.status_code == 200, response.status_code
    assert int(response.headers["Content-Length"]) == descriptor["size"]  # ggcr insists
    assert oci.sha256_digest(response.content) == descriptor["digest"]
    return response.content
