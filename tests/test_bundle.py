"""Bundles: export cached images, import them into an empty cache that then serves them
under the same names; a damaged or tampered bundle is refused and leaves nothing."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from mirror.cache.store import ContentStore
from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support.clients import oras_pull, skopeo_copy
from tests.support.proxy import ProxyProcess, proxy_config, run_mirror, toml_text

IMAGES = ["tools/alpha:1.0", "multi/app:1.0", "legacy/dockerimg:v2", "sif/tool:1.0"]


def _config(path, workdir, registry_url: str, **cache) -> dict:
    config = proxy_config(workdir, {"u": upstream_entry(registry_url, mode="offline")}, **cache)
    path.write_text(toml_text(config))
    return config


@pytest.fixture(scope="module")
def bundle(upstream, seeded, tmp_path_factory):
    work = tmp_path_factory.mktemp("export")
    source = proxy_config(work, {"u": upstream_entry(upstream.url)})
    (work / "source.toml").write_text(toml_text(source))
    names = [f"{UPSTREAM_PREFIX}/{image}" for image in IMAGES]
    fetched = run_mirror(work / "source.toml", "prefetch", *names)
    assert fetched.returncode == 0, fetched.stderr
    listing = work / "images.txt"
    listing.write_text("\n".join(names) + "\n")
    written = run_mirror(
        work / "source.toml", "export", str(work / "bundle.tar"), "--file", str(listing)
    )
    assert written.returncode == 0, written.stderr
    assert f"wrote {len(IMAGES)} images" in written.stdout
    return work / "bundle.tar"


def test_bundle_is_an_oci_layout_naming_the_images(bundle, seeded):
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())
    assert names[:2] == ["oci-layout", "index.json"]
    recorded = {
        (
            e["annotations"]["io.github.hpc-mirror.repository"],
            e["annotations"]["org.opencontainers.image.ref.name"],
            e["digest"],
        )
        for e in index["manifests"]
    }
    assert recorded == {
        (f"{UPSTREAM_PREFIX}/{i.split(':')[0]}", i.split(":")[1], seeded[i].digest) for i in IMAGES
    }


def test_import_into_an_empty_cache_serves_the_same_digests(bundle, seeded, tmp_path):
    config = _config(tmp_path / "target.toml", tmp_path, "http://127.0.0.1:9")
    result = run_mirror(tmp_path / "target.toml", "import", str(bundle))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("imported ") == len(IMAGES)
    with ProxyProcess(tmp_path / "serve", config) as proxy:  # upstream offline: cache only
        dest = tmp_path / "layout"
        skopeo_copy(proxy.host, "multi/app:1.0", f"oci:{dest}:x", "--all")
        index = json.loads((dest / "index.json").read_text())
        assert index["manifests"][0]["digest"] == seeded["multi/app:1.0"].digest
        files = oras_pull(proxy.host, "sif/tool:1.0", tmp_path / "sif")
        assert open(files[0], "rb").read() == seeded["sif/tool:1.0"].sif.data


def _rewrite(bundle, target, change) -> None:
    """Copy the bundle, passing each member's bytes through `change(name, data)`."""
    with tarfile.open(bundle) as src, tarfile.open(target, "w") as dst:
        for member in src.getmembers():
            data = change(member.name, src.extractfile(member).read())
            if data is None:
                continue
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))


@pytest.mark.parametrize("damage", ["flip", "drop", "truncate"])
def test_a_damaged_bundle_is_refused_and_leaves_nothing(bundle, seeded, tmp_path, damage):
    victim = seeded["tools/alpha:1.0"].layers[0]["digest"]
    bad = tmp_path / "bad.tar"
    if damage == "truncate":
        bad.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    else:

        def change(name, data):
            if name != f"blobs/sha256/{victim[7:]}":
                return data
            return None if damage == "drop" else data[:50] + bytes([data[50] ^ 1]) + data[51:]

        _rewrite(bundle, bad, change)
    _config(tmp_path / "target.toml", tmp_path, "http://127.0.0.1:9")
    result = run_mirror(tmp_path / "target.toml", "import", str(bad))
    assert result.returncode == 1
    assert "refused" in result.stderr
    if damage != "truncate":
        assert victim in result.stderr
    cache = tmp_path / "cache"
    assert list((cache / "blobs" / "sha256").glob("*/*")) == []
    assert list((cache / "tmp").iterdir()) == []
    assert not (cache / "repositories").exists() or not any((cache / "repositories").rglob("_tags"))


def test_a_bundle_naming_a_bad_upstream_prefix_is_refused(bundle, tmp_path):
    def change(name, data):
        if name != "index.json":
            return data
        return data.replace(f'"{UPSTREAM_PREFIX}/'.encode(), b'"Not_A_Host/')

    _rewrite(bundle, tmp_path / "bad.tar", change)
    _config(tmp_path / "target.toml", tmp_path, "http://127.0.0.1:9")
    result = run_mirror(tmp_path / "target.toml", "import", str(tmp_path / "bad.tar"))
    assert result.returncode == 1
    assert (
        "index.json of the bundle is not valid: invalid upstream prefix 'Not_A_Host'"
        in result.stderr
    )


def test_export_names_what_is_missing(bundle, tmp_path):
    _config(tmp_path / "empty.toml", tmp_path, "http://127.0.0.1:9")
    ContentStore(tmp_path / "cache")  # a cache that exists and holds nothing
    missing = run_mirror(
        tmp_path / "empty.toml",
        "export",
        str(tmp_path / "out.tar"),
        f"{UPSTREAM_PREFIX}/tools/alpha:1.0",
    )
    assert missing.returncode == 1
    assert f"error: {UPSTREAM_PREFIX}/tools/alpha:1.0 is not cached" in missing.stderr
    by_digest = run_mirror(
        tmp_path / "empty.toml",
        "export",
        str(tmp_path / "out.tar"),
        f"{UPSTREAM_PREFIX}/tools/alpha@sha256:{'a' * 64}",
    )
    assert by_digest.returncode == 1 and "export images by tag" in by_digest.stderr
