"""Images whose layers the tests write entry by entry: for what image tools cannot make on
demand (whiteouts, opaque directories, hard links across layers, setuid bits, long names,
xattrs, empty layers, zstd) and for damaged input. Such an image is put straight into a
content store, written as an OCI layout (for `umoci unpack`), or pushed to a registry."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirror.cache.store import ContentStore
from mirror.reference import Digest

from . import oci

LAYER_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "plain": "application/vnd.oci.image.layer.v1.tar",
}
_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
}
_MODES = {"dir": 0o755, "symlink": 0o777}


@dataclass(frozen=True)
class Entry:
    """One tar entry; `link` is a symlink's target or a hard link's target name."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    link: str = ""
    mtime: int = 1_700_000_000
    xattrs: dict[str, str] = field(default_factory=dict)


def tar_bytes(entries: list[Entry], tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar of `entries`, in order (PAX, or `tarfile.GNU_FORMAT`: long names and large
    numbers as GNU tar writes them)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = _TYPES[entry.kind]
            info.mode = entry.mode if entry.mode is not None else _MODES.get(entry.kind, 0o644)
            info.uid, info.gid, info.mtime = entry.uid, entry.gid, entry.mtime
            info.linkname = entry.link
            if entry.kind in ("char", "block"):
                info.devmajor, info.devminor = 1, 3
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in entry.xattrs.items()}
            info.size = len(entry.data) if entry.kind == "file" else 0
            tar.addfile(info, io.BytesIO(entry.data) if info.size else None)
    return buffer.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return subprocess.run(
            ["zstd", "-q", "-c"], input=data, capture_output=True, check=True
        ).stdout
    assert how == "plain", how
    return data


@dataclass(frozen=True)
class LayerBlob:
    """A layer as stored: its bytes and media type (any bytes, for damaged layers)."""

    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return oci.sha256_digest(self.data)


def layer(
    entries: list[Entry], how: str = "gzip", tar_format: int = tarfile.PAX_FORMAT
) -> LayerBlob:
    return LayerBlob(compress(tar_bytes(entries, tar_format), how), LAYER_TYPES[how])


@dataclass(frozen=True)
class BuiltImage:
    """An OCI image: manifest, config and layer blobs."""

    manifest: bytes
    config: bytes
    layers: tuple[LayerBlob, ...]

    @property
    def digest(self) -> Digest:
        return Digest.parse(oci.sha256_digest(self.manifest))

    def blobs(self) -> list[tuple[dict[str, Any], bytes]]:
        """(descriptor, bytes) of the config and each layer, as `seed.publish` takes them."""
        manifest = json.loads(self.manifest)
        return [(manifest["config"], self.config)] + [
            (descriptor, blob.data) for descriptor, blob in zip(manifest["layers"], self.layers)
        ]


def image(
    layers: list[LayerBlob], container: dict[str, Any] | None = None, **config: Any
) -> BuiltImage:
    """An amd64 Linux image of `layers` whose config holds `container` (Entrypoint, Cmd,
    Env, Labels...) and any other top-level `config` fields."""
    document = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-05-06T07:08:09.123456789Z",
        "config": container or {},
        "rootfs": {
            "type": "layers",
            "diff_ids": [_diff_id(blob) for blob in layers],
        },
        **config,
    }
    config_bytes = json.dumps(document).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "config": oci.descriptor_for(oci.OCI_CONFIG, config_bytes),
            "layers": [oci.descriptor_for(blob.media_type, blob.data) for blob in layers],
        }
    ).encode()
    return BuiltImage(manifest, config_bytes, tuple(layers))


def _diff_id(blob: LayerBlob) -> str:
    """The sha256 of the uncompressed layer, or of the bytes when they do not decompress."""
    try:
        if blob.media_type.endswith("gzip"):
            return oci.sha256_digest(gzip.decompress(blob.data))
        if blob.media_type.endswith("zstd"):
            return oci.sha256_digest(
                subprocess.run(
                    ["zstd", "-d", "-q", "-c"], input=blob.data, capture_output=True, check=True
                ).stdout
            )
    except (OSError, EOFError, subprocess.CalledProcessError):
        pass
    return oci.sha256_digest(blob.data)


def put_in_store(store: ContentStore, test_image: BuiltImage) -> Digest:
    """Store the image's manifest, config and layers; return the manifest digest."""
    for data in (test_image.manifest, test_image.config, *(b.data for b in test_image.layers)):
        store.put_bytes(Digest.parse(oci.sha256_digest(data)), data)
    return test_image.digest


def write_oci_layout(path: Path, test_image: BuiltImage, tag: str = "latest") -> str:
    """An OCI image layout holding the image under `tag`; returns `<path>:<tag>`."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for data in (test_image.manifest, test_image.config, *(b.data for b in test_image.layers)):
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    descriptor = oci.descriptor_for(oci.OCI_MANIFEST, test_image.manifest)
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
    return f"{path}:{tag}"
