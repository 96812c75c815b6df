"""The content a run pulls: random layers written to a file (hashed while written) and
pushed to the upstream with the tests' registry client, one OCI image per layer."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import MIB
from tests.support import oci
from tests.support.seed import RegistryClient, publish

TAG = "latest"
PIECE = 4 * MIB  # read and push the layer file in pieces of this size


@dataclass(frozen=True)
class Image:
    """One seeded image: a config blob and one layer, tagged TAG."""

    repo: str
    layer_hex: str
    layer_size: int
    manifest_digest: str

    def _name(self, prefix: str | None) -> str:
        return f"{prefix}/{self.repo}" if prefix else self.repo

    def blob_path(self, prefix: str | None = None) -> str:
        """The layer's URL path; under `prefix` for the proxy, without for a registry."""
        return f"/v2/{self._name(prefix)}/blobs/sha256:{self.layer_hex}"

    def manifest_path(self, reference: str, prefix: str | None = None) -> str:
        return f"/v2/{self._name(prefix)}/manifests/{reference}"


@dataclass(frozen=True)
class FileBlob:
    """A layer on disk, streamed to the registry piece by piece."""

    path: Path
    digest: str
    size: int

    def chunks(self) -> Iterator[bytes]:
        with open(self.path, "rb") as source:
            while piece := source.read(PIECE):
                yield piece


def random_stream() -> Callable[[int], bytes]:
    """A source of random bytes: AES-CTR keystream when `cryptography` is importable
    (about 20x faster than os.urandom here), else os.urandom."""
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        return os.urandom
    encryptor = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
    return lambda count: encryptor.update(bytes(count))


def random_file(path: Path, size: int) -> FileBlob:
    """Write `size` random bytes to `path`, hashing while writing."""
    digest = hashlib.sha256()
    source = random_stream()
    with open(path, "wb") as out:
        left = size
        while left:
            data = source(min(8 * MIB, left))
            digest.update(data)
            out.write(data)
            left -= len(data)
    return FileBlob(path, "sha256:" + digest.hexdigest(), size)


def push_image(client: RegistryClient, repo: str, layer: FileBlob) -> Image:
    """Push a config blob, the layer (monolithic upload: POST, then PUT ?digest=) and an
    OCI manifest tagged TAG."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        },
        sort_keys=True,
    ).encode()
    config_descriptor = oci.descriptor_for(oci.OCI_CONFIG, config)
    layer_descriptor = oci.descriptor(oci.OCI_LAYER_TAR, layer.digest, layer.size)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "config": config_descriptor,
            "layers": [layer_descriptor],
        },
        indent=2,
    ).encode()
    [image] = publish(
        client,
        repo,
        [TAG],
        oci.OCI_MANIFEST,
        manifest,
        [(config_descriptor, config), (layer_descriptor, layer)],
    )
    return Image(repo, layer.digest.removeprefix("sha256:"), layer.size, image.digest)
