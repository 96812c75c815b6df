"""The SIF tree: verified SIF artifacts appear as read-only files at predictable paths,
switched atomically when their tag moves."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import time

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support import oci
from tests.support.clients import oras_pull
from tests.support.seed import SIF_GENERATIONS, RegistryClient, publish
from tests.support.sifwriter import example_sif, make_squashfs


def _push_sif(registry, version: str):
    """Push sif/tool:1.0 (Apptainer >= 1.3.1 style); another `version` gives another SIF
    under the same tag, i.e. the tag moves."""
    with tempfile.TemporaryDirectory() as tmp:
        squashfs = make_squashfs(tmp)
    generation = SIF_GENERATIONS[0]
    sif = example_sif(squashfs, name="tool", version=version)
    config = oci.descriptor_for(generation.config_type, generation.config, order=generation.order)
    layer = oci.descriptor_for(
        oci.SIF_LAYER,
        sif.data,
        order=generation.order,
        annotations={oci.TITLE_ANNOTATION: f"tool_{version}.sif"},
    )
    manifest = oci.image_manifest(generation.manifest_type, config, [layer])
    client = RegistryClient(registry.url)
    try:
        [image] = publish(
            client,
            generation.repository,
            [generation.tag],
            generation.put_type,
            manifest,
            [(config, generation.config), (layer, sif.data)],
        )
    finally:
        client.close()
    return image


def _pull(proxy, tmp_path):
    oras_pull(proxy.host, "sif/tool:1.0", tmp_path)


def test_pulled_sif_appears_in_the_tree_and_follows_its_tag(make_proxy, private_upstream, tmp_path):
    first = _push_sif(private_upstream, "1.0")
    tree = tmp_path / "sif-tree"
    proxy = make_proxy(
        {"u": upstream_entry(private_upstream.url)}, sif_tree=str(tree), tag_ttl_seconds=0.2
    )
    _pull(proxy, tmp_path / "pull1")
    path = tree / UPSTREAM_PREFIX / "sif" / "tool" / "1.0.sif"
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, "the SIF never appeared in the tree"
        time.sleep(0.05)
    layer = first.layers[0]["digest"]
    assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == layer
    assert path.read_bytes()[32:42] == b"SIF_MAGIC\0"
    info = path.stat()
    assert not info.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    blob = proxy.cache_root / "blobs" / "sha256" / layer[7:9] / layer[7:]
    assert os.path.samefile(path, blob)  # a hard link into the store: no second copy

    moved = _push_sif(private_upstream, "2.0")
    assert moved.layers[0]["digest"] != layer
    with open(path, "rb") as held:  # a running job holding the old file keeps it
        time.sleep(0.3)
        _pull(proxy, tmp_path / "pull2")
        deadline = time.monotonic() + 10
        while (
            "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() != moved.layers[0]["digest"]
        ):
            assert time.monotonic() < deadline, "the tree did not follow the moved tag"
            time.sleep(0.05)
        assert "sha256:" + hashlib.sha256(held.read()).hexdigest() == layer
    assert [p.name for p in path.parent.iterdir()] == ["1.0.sif"]  # no temp files left
