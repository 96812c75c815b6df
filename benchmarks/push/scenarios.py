"""The timed pushes, the same requests to either registry: one big blob as a monolithic
upload (POST, then PUT ?digest= with the whole body) or in chunks (POST, PATCH with
Content-Range per chunk, PUT ?digest=), and an image of many small layers (HEAD, POST and
PUT ?digest= per blob, then the manifest), which measures the protocol's per-blob cost."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from benchmarks.harness import BenchError
from benchmarks.proxy.cpu import CpuMeter
from benchmarks.proxy.seed import FileBlob
from benchmarks.push.client import FileRegion, PushClient, with_digest
from tests.support import oci


@dataclass
class Push:
    """One timed push: bytes and blobs sent, wall time, CPU seconds of the server."""

    size: int
    blobs: int
    seconds: float
    server_cpu: float
    client_cpu: float

    @property
    def mib_s(self) -> float:
        return self.size / (1 << 20) / self.seconds

    @property
    def blobs_s(self) -> float:
        return self.blobs / self.seconds

    @property
    def cpu_per_gib(self) -> float:
        return self.server_cpu / (self.size / (1 << 30))


def timed(server_pid: int | None, size: int, blobs: int, push: Callable[[], None]) -> Push:
    with CpuMeter({"server": server_pid}) as meter:
        started = time.perf_counter()
        push()
        seconds = time.perf_counter() - started
    return Push(size, blobs, seconds, meter.total("server"), meter.total("client"))


def put_blob(client: PushClient, repo: str, blob: FileBlob, source: BinaryIO) -> None:
    """Monolithic: POST, then PUT ?digest= streaming the whole file."""
    started = client.expect(202, "POST", f"/v2/{repo}/blobs/uploads/")
    region = FileRegion(source, 0, blob.size)
    put = with_digest(client.location(started), blob.digest)
    client.expect(201, "PUT", put, region, content_type="application/octet-stream")


def patch_blob(client: PushClient, repo: str, blob: FileBlob, source: BinaryIO, chunk: int) -> None:
    """Chunked: POST, one PATCH per `chunk` bytes (Content-Range), PUT ?digest= empty."""
    fields = client.expect(202, "POST", f"/v2/{repo}/blobs/uploads/")
    for offset in range(0, blob.size, chunk):
        count = min(chunk, blob.size - offset)
        fields = client.expect(
            202,
            "PATCH",
            client.location(fields),
            FileRegion(source, offset, count),
            content_type="application/octet-stream",
            content_range=f"{offset}-{offset + count - 1}",
        )
    client.expect(201, "PUT", with_digest(client.location(fields), blob.digest))


def small_layers(count: int, size: int, seed: str) -> list[bytes]:
    """`count` distinct layers of `size` pseudo-random bytes (new for every `seed`)."""
    return [hashlib.shake_256(f"{seed}/{n}".encode()).digest(size) for n in range(count)]


def push_image(client: PushClient, repo: str, layers: list[bytes]) -> None:
    """What skopeo does per blob (HEAD, POST, PUT ?digest=), then the config and an OCI
    manifest naming every layer, tagged `1`."""
    descriptors = [_push_small(client, repo, oci.OCI_LAYER_TAR, data) for data in layers]
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    config_descriptor = _push_small(client, repo, oci.OCI_CONFIG, config)
    manifest = oci.image_manifest(oci.OCI_MANIFEST, config_descriptor, descriptors)
    client.expect(201, "PUT", f"/v2/{repo}/manifests/1", manifest, content_type=oci.OCI_MANIFEST)


def _push_small(client: PushClient, repo: str, media_type: str, data: bytes) -> dict:
    descriptor = oci.descriptor_for(media_type, data)
    status, _, _ = client.request("HEAD", f"/v2/{repo}/blobs/{descriptor['digest']}")
    if status == 200:
        raise BenchError(f"{repo} already holds {descriptor['digest']}: layers must be new")
    started = client.expect(202, "POST", f"/v2/{repo}/blobs/uploads/")
    put = with_digest(client.location(started), descriptor["digest"])
    client.expect(201, "PUT", put, data, content_type="application/octet-stream")
    return descriptor


def check_stored(client: PushClient, repo: str, digest: str, size: int) -> None:
    """The registry serves the pushed blob with its size (untimed)."""
    fields = client.expect(200, "HEAD", f"/v2/{repo}/blobs/{digest}")
    if int(fields.get("content-length", -1)) != size:
        raise BenchError(f"{repo}: {digest} stored with {fields.get('content-length')} bytes")
