"""A conversion on a store filesystem that cannot insert a range into a file (tmpfs) gives
the same bytes; one on a full filesystem fails as the store refusing a write, leaving
nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mirror.cache.store import ContentStore
from mirror.errors import StoreRefused
from tests.support.conversion import convert_image, convert_stored
from tests.support.layers import Entry, image, layer, put_in_store
from tests.test_full_disk import fill_up
from tests.test_full_disk import small_fs as small_fs_fixture

small_fs = small_fs_fixture  # a tmpfs of 8 MiB of the test's own
NOISE = os.urandom(2 << 20)


def _image():
    return image([layer([Entry("noise", data=NOISE), Entry("text", data=b"t" * 100_000)])])


def test_on_tmpfs_the_sif_is_the_one_ext4_gets(small_fs: Path, tmp_path: Path):
    _, on_ext4 = convert_image(tmp_path, _image())
    _, on_tmpfs = convert_image(small_fs, _image())

    assert on_tmpfs.digest == on_ext4.digest
    assert os.listdir(small_fs / "cache" / "tmp") == [on_tmpfs.path.name]


def test_a_full_store_refuses_and_keeps_nothing(small_fs: Path):
    store = ContentStore(small_fs / "cache")
    digest = put_in_store(store, _image())
    fill_up(small_fs, leave=512 * 1024)

    with pytest.raises(StoreRefused):
        convert_stored(store, digest)
    assert os.listdir(small_fs / "cache" / "tmp") == []
