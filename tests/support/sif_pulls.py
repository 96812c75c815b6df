"""Images for the SIF namespace's tests, pushed to a real registry: images whose layers
the tests write (`layers.image`), a multi-platform index of them; and what a SIF pulled
through the mirror is compared with: the same source converted by the library directly."""

from __future__ import annotations

import json
from pathlib import Path

from mirror.cache.store import ContentStore
from mirror.convert.converter import ConvertedSif, convert
from mirror.reference import Digest

from . import oci
from .conversion import sif_config
from .layers import BuiltImage, Entry, image, layer
from .proxy import UPSTREAM_PREFIX
from .seed import RegistryClient

CONTAINER = {"Entrypoint": ["/bin/echo"], "Cmd": ["hello"], "Env": ["PATH=/bin"]}


def small_image(text: str, **config: object) -> BuiltImage:
    """A one-layer image whose file `etc/message` holds `text` (a new text, a new image)."""
    files = [Entry("bin/echo", data=b"echo", mode=0o755), Entry("etc/message", data=text.encode())]
    return image([layer(files)], CONTAINER, **config)


def push_image(registry_url: str, repository: str, tag: str, built: BuiltImage) -> Digest:
    """Push `built` as `repository:tag`; its manifest digest."""
    client = RegistryClient(registry_url)
    try:
        for descriptor, data in built.blobs():
            client.push_blob(repository, data, descriptor["mediaType"])
        client.push_manifest(repository, tag, built.manifest, oci.OCI_MANIFEST)
    finally:
        client.close()
    return built.digest


def push_index(
    registry_url: str, repository: str, tag: str, children: dict[str, BuiltImage]
) -> Digest:
    """Push each child by digest and an OCI index over them, keyed `os/arch[/variant]`."""
    entries = []
    for platform, child in children.items():
        push_image(registry_url, repository, str(child.digest), child)
        os_name, arch, *variant = platform.split("/")
        entry_platform = {"architecture": arch, "os": os_name}
        if variant:
            entry_platform["variant"] = variant[0]
        entry = oci.descriptor_for(oci.OCI_MANIFEST, child.manifest)
        entry["platform"] = entry_platform
        entries.append(entry)
    manifest = oci.index_manifest(oci.OCI_INDEX, entries)
    client = RegistryClient(registry_url)
    try:
        client.push_manifest(repository, tag, manifest, oci.OCI_INDEX)
    finally:
        client.close()
    return Digest.parse(oci.sha256_digest(manifest))


def sif_name(repository: str, namespace: str = "sif") -> str:
    """`<namespace>/up.test/<repository>`: the image's SIF through a test mirror."""
    return f"{namespace}/{UPSTREAM_PREFIX}/{repository}"


def converted_directly(
    cache_root: Path, repository: str, image: Digest, out: Path, **sif: object
) -> ConvertedSif:
    """The library's conversion of the (cached) image, as the mirror names its source,
    with the `[sif]` settings `sif`."""
    store = ContentStore(cache_root, create=False)
    reference = f"{UPSTREAM_PREFIX}/{repository}@{image}"
    return convert(store, image, reference, sif_config(**sif), out)


def manifest_json(body: bytes) -> dict:
    return json.loads(body)
