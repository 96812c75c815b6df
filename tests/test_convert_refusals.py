"""Bad input: a clear error naming the image and the layer, and nothing left behind."""

from __future__ import annotations

import gzip
import os
import tarfile
import threading
from pathlib import Path

import pytest

from mirror.cache.store import ContentStore
from mirror.convert.converter import convert
from mirror.errors import BlobUnknown, ConversionCancelled, ConversionRefused
from mirror.reference import Digest
from tests.support import oci
from tests.support.conversion import REFERENCE, convert_stored, sif_config
from tests.support.layers import (
    LAYER_TYPES,
    BuiltImage,
    Entry,
    LayerBlob,
    image,
    layer,
    put_in_store,
    tar_bytes,
)


def _refusal(tmp_path: Path, test_image: BuiltImage, **overrides: object) -> str:
    """Convert, expecting a refusal; the store's tmp dir must be empty afterwards."""
    store = ContentStore(tmp_path / "cache")
    digest = put_in_store(store, test_image)
    with pytest.raises(ConversionRefused) as refused:
        convert_stored(store, digest, **overrides)
    assert os.listdir(tmp_path / "cache" / "tmp") == []
    message = refused.value.message
    assert REFERENCE in message and str(test_image.digest) in message
    return message


def _layer_named(message: str, test_image: BuiltImage, number: int) -> bool:
    blob = test_image.layers[number - 1]
    return f"layer {number} of {len(test_image.layers)} ({blob.digest})" in message


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../etc/passwd", "escapes the root"),
        ("a/../../etc/passwd", "escapes the root"),
        ("/etc/passwd", "absolute name"),
    ],
)
def test_names_outside_the_root(tmp_path: Path, name: str, reason: str):
    bad = image([layer([Entry("ok", data=b"1")]), layer([Entry(name, data=b"x")])])
    message = _refusal(tmp_path, bad)
    assert _layer_named(message, bad, 2) and reason in message and name in message


def test_hard_link_to_a_missing_target(tmp_path: Path):
    bad = image([layer([Entry("a", "hardlink", link="nowhere")])])
    message = _refusal(tmp_path, bad)
    assert _layer_named(message, bad, 1) and "'nowhere'" in message and "missing" in message


def test_hard_link_to_a_target_a_lower_layer_removed(tmp_path: Path):
    bad = image(
        [
            layer([Entry("target", data=b"t")]),
            layer([Entry(".wh.target")]),
            layer([Entry("link", "hardlink", link="target")]),
        ]
    )
    message = _refusal(tmp_path, bad)
    assert _layer_named(message, bad, 3) and "missing" in message


def test_hard_link_to_a_directory(tmp_path: Path):
    bad = image([layer([Entry("d", "dir"), Entry("l", "hardlink", link="d")])])
    assert "a directory" in _refusal(tmp_path, bad)


def test_entry_below_a_file(tmp_path: Path):
    bad = image([layer([Entry("f", data=b"1")]), layer([Entry("f/x", data=b"2")])])
    message = _refusal(tmp_path, bad)
    assert _layer_named(message, bad, 2) and "not a directory" in message


GZIP, ZSTD, TAR = (LAYER_TYPES[how] for how in ("gzip", "zstd", "plain"))
GOOD_TAR = tar_bytes([Entry("file", data=os.urandom(200_000))])
GOOD_GZIP = gzip.compress(GOOD_TAR)
# a header, 40 blocks of content, then the second entry's header at byte 512 * 41
TWO_FILES = tar_bytes(
    [Entry("one", data=bytes(20480)), Entry("two", data=b"2")], tarfile.USTAR_FORMAT
)
GOOD_ZSTD = layer([Entry("file", data=os.urandom(200_000))], "zstd").data


def _damaged(data: bytes, media_type: str = GZIP) -> LayerBlob:
    return LayerBlob(data, media_type)


def _flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


@pytest.mark.parametrize(
    "blob, reason",
    [
        (_damaged(GOOD_GZIP[:-2000]), "gzip stream is truncated"),
        (_damaged(_flipped(GOOD_GZIP, 3000)), "corrupt gzip data"),
        (_damaged(GOOD_GZIP + b"trailing garbage"), "garbage after the gzip stream"),
        (_damaged(GOOD_ZSTD[:-5000], ZSTD), "not a whole zstd stream"),
        (_damaged(_flipped(GOOD_ZSTD, 3000), ZSTD), "not a whole zstd stream"),
        (_damaged(os.urandom(4096), TAR), "not a valid tar"),
        (_damaged(GOOD_TAR[:-20000], TAR), "not a valid tar"),
        (_damaged(_flipped(TWO_FILES, 512 * 41 + 100), TAR), "invalid header at byte 20992"),
        (_damaged(GOOD_TAR + b"garbage" + bytes(505), TAR), "data after the end of the archive"),
    ],
    ids=["truncated-gzip", "corrupt-gzip", "garbage-after-gzip", "truncated-zstd",
         "corrupt-zstd", "not-tar", "truncated-tar", "damaged-second-header", "garbage-after-tar"],
)  # fmt: skip
def test_damaged_layers(tmp_path: Path, blob: LayerBlob, reason: str):
    bad = image([layer([Entry("fine", data=b"1")]), blob])
    message = _refusal(tmp_path, bad)
    assert _layer_named(message, bad, 2) and reason in message


def test_unsupported_layer_media_type(tmp_path: Path):
    squashfs_layer = LayerBlob(
        b"hsqs" + bytes(100), "application/vnd.sylabs.image.layer.v1.squashfs"
    )
    bad = image([layer([Entry("fine", data=b"1")]), squashfs_layer])
    message = _refusal(tmp_path, bad)
    assert _layer_named(message, bad, 2) and "unsupported media type" in message


def test_a_decompression_bomb_stops_at_max_rootfs_bytes(tmp_path: Path):
    bomb = layer([Entry("zeros", data=bytes(8 << 20))])  # 8 MiB that gzip to 8 KiB
    bad = image([bomb])
    message = _refusal(tmp_path, bad, max_rootfs_bytes="1M")
    assert _layer_named(message, bad, 1) and "max_rootfs_bytes = 1048576" in message


def test_the_size_limit_counts_every_layer(tmp_path: Path):
    half = bytes(700 << 10)
    bad = image([layer([Entry("one", data=half)]), layer([Entry("two", data=half)])])
    assert _layer_named(_refusal(tmp_path, bad, max_rootfs_bytes="1M"), bad, 2)


def test_an_index_is_not_converted(tmp_path: Path):
    store = ContentStore(tmp_path / "cache")
    child = image([layer([Entry("f", data=b"1")])])
    put_in_store(store, child)
    index = oci.index_manifest(
        oci.OCI_INDEX,
        [
            oci.descriptor_for(
                oci.OCI_MANIFEST, child.manifest, platform={"os": "linux", "architecture": "amd64"}
            )
        ],
    )
    digest = Digest.parse(oci.sha256_digest(index))
    store.put_bytes(digest, index)
    with pytest.raises(ConversionRefused, match="not an image manifest but index"):
        convert_stored(store, digest)


def test_a_layer_not_cached(tmp_path: Path):
    test_image = image([layer([Entry("f", data=b"1")]), layer([Entry("g", data=b"2")])])
    store = ContentStore(tmp_path / "cache")
    digest = put_in_store(store, test_image)
    store.delete_blob(Digest.parse(test_image.layers[1].digest))
    with pytest.raises(BlobUnknown, match="layer 2 of 2 .* not cached"):
        convert_stored(store, digest)


def test_a_windows_image(tmp_path: Path):
    bad = image([layer([Entry("f", data=b"1")])], os="windows")
    store = ContentStore(tmp_path / "cache")
    with pytest.raises(ConversionRefused, match="'windows' image"):
        convert_stored(store, put_in_store(store, bad))


def test_cancelling_stops_the_conversion_and_leaves_nothing(tmp_path: Path):
    big = image([layer([Entry("noise", data=os.urandom(48 << 20))])])
    store = ContentStore(tmp_path / "cache")
    digest = put_in_store(store, big)
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    out = store.temp_path("sif")
    with pytest.raises(ConversionCancelled):
        convert(store, digest, REFERENCE, sif_config(compression="xz"), out, cancel=cancel)
    timer.join()
    assert os.listdir(tmp_path / "cache" / "tmp") == []


def test_an_existing_output_file_is_left_alone(tmp_path: Path):
    store = ContentStore(tmp_path / "cache")
    digest = put_in_store(store, image([layer([Entry("f", data=b"1")])]))
    out = store.temp_path("sif")
    out.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        convert(store, digest, REFERENCE, sif_config(), out)
    assert out.read_bytes() == b"someone else's"
