"""Real clients pull through the proxy: skopeo (containers/image) and the oras Python SDK."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import UPSTREAM_PREFIX
from tests.support.clients import oras_pull, skopeo_copy


def _layout_digest(dest: Path) -> str:
    return json.loads((dest / "index.json").read_text())["manifests"][0]["digest"]


def _assert_blobs_verified(blob_dir: Path) -> set[str]:
    """Check every blob file hashes to its name; return the names."""
    names = set()
    for blob in blob_dir.iterdir():
        if len(blob.name) == 64:
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
            names.add(blob.name)
    return names


@pytest.mark.parametrize("reference", ["tools/alpha:1.0", "big/blob:1.0"])
def test_skopeo_copies_oci_images_with_upstream_digests(proxy, seeded, tmp_path, reference):
    image = seeded[reference]
    dest = tmp_path / "layout"
    skopeo_copy(proxy.host, reference, f"oci:{dest}:pulled")
    assert _layout_digest(dest) == image.digest
    stored = _assert_blobs_verified(dest / "blobs" / "sha256")
    assert {b["digest"].split(":")[1] for b in image.blobs} <= stored


def test_skopeo_copies_a_docker_schema2_image_unchanged(proxy, seeded, tmp_path):
    image = seeded["legacy/dockerimg:v2"]
    dest = tmp_path / "dir"
    skopeo_copy(proxy.host, "legacy/dockerimg:v2", f"dir:{dest}")
    assert (dest / "manifest.json").read_bytes() == image.manifest
    stored = _assert_blobs_verified(dest)
    assert {b["digest"].split(":")[1] for b in image.blobs} <= stored


def test_skopeo_copies_a_whole_multi_arch_index(proxy, seeded, tmp_path):
    index = seeded["multi/app:1.0"]
    dest = tmp_path / "layout"
    skopeo_copy(proxy.host, "multi/app:1.0", f"oci:{dest}:pulled", "--all")
    assert _layout_digest(dest) == index.digest
    stored = _assert_blobs_verified(dest / "blobs" / "sha256")
    assert {child.digest.split(":")[1] for child in index.children} <= stored


def test_skopeo_inspect_by_digest(proxy, seeded):
    image = seeded["tools/beta:2.0"]
    result = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--tls-verify=false",
            "--raw",
            f"docker://{proxy.host}/{UPSTREAM_PREFIX}/tools/beta@{image.digest}",
        ],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == image.manifest


@pytest.mark.parametrize(
    "reference",
    ["sif/tool:1.0", "sif/legacy:oras-go-v1", "sif/dockerv2:1.3.0", "sif/zeroconfig:3.7"],
)
def test_oras_sdk_pulls_sif_byte_identical(proxy, seeded, tmp_path, reference):
    image = seeded[reference]
    files = oras_pull(proxy.host, reference, tmp_path)
    assert len(files) == 1
    pulled = Path(files[0]).read_bytes()
    assert pulled == image.sif.data
    assert pulled[32:42] == b"SIF_MAGIC\0"
    assert Path(files[0]).name == image.layers[0]["annotations"]["org.opencontainers.image.title"]
