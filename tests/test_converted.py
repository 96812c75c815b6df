"""The SIF namespace through a real `mirror serve` in front of a real registry: images the
test pushes are pulled as SIFs by the oras SDK, read by Sylabs' siftool, and equal byte
for byte to the library's own conversion of them; tags follow the source, digests are the
SIF's own, other platforms have names of their own, a bad image is refused by name, and a
restricted image stays restricted."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import requests

from mirror.reference import Digest
from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support.accounts import write_groups, write_htpasswd
from tests.support.clients import oras_login_pull, oras_pull
from tests.support.conversion import siftool
from tests.support.layers import Entry, image, layer
from tests.support.proxy import run_mirror
from tests.support.sif_pulls import (
    converted_directly,
    push_image,
    push_index,
    sif_name,
    small_image,
)

ORAS_ACCEPT = "application/vnd.oci.image.manifest.v1+json"
APPTAINER_1_3_1_SHAPE = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {
        "mediaType": "application/vnd.sylabs.sif.config.v1+json",
        "size": 2,
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    },
}


def _manifest(proxy, name: str, reference: str, **kwargs) -> requests.Response:
    return requests.get(
        f"{proxy.url}/v2/{name}/manifests/{reference}",
        headers={"Accept": ORAS_ACCEPT},
        timeout=120,
        **kwargs,
    )


def _conversions(proxy) -> int:
    return proxy.log().count("INFO mirror.proxy.conversions: converting ")


def _pull(proxy, name: str, reference: str, outdir: Path, namespace: str = "sif") -> Path:
    [pulled] = oras_pull(proxy.host, f"{name}:{reference}", outdir, under=f"{namespace}/up.test")
    return Path(pulled)


def test_oras_pulls_the_sif_of_an_image(make_proxy, upstream, tmp_path: Path):
    digest = push_image(upstream.url, "served/small", "1", small_image("first"))
    proxy = make_proxy({"u": upstream_entry(upstream.url)})

    pulled = _pull(proxy, "served/small", "1", tmp_path / "pulled")

    assert "FS (Squashfs/*System/amd64)" in siftool("list", pulled)
    direct = converted_directly(proxy.cache_root, "served/small", digest, tmp_path / "direct.sif")
    assert pulled.read_bytes() == direct.path.read_bytes()
    response = _manifest(proxy, sif_name("served/small"), "1")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == ORAS_ACCEPT
    assert response.headers["Docker-Content-Digest"] == (
        "sha256:" + hashlib.sha256(response.content).hexdigest()
    )
    manifest = json.loads(response.content)
    assert {k: manifest[k] for k in APPTAINER_1_3_1_SHAPE} == APPTAINER_1_3_1_SHAPE
    assert manifest["layers"] == [
        {
            "mediaType": "application/vnd.sylabs.sif.layer.v1.sif",
            "size": direct.size,
            "digest": str(direct.digest),
            "annotations": {"org.opencontainers.image.title": f"small_{digest.hex[:12]}.sif"},
        }
    ]
    config = requests.get(
        f"{proxy.url}/v2/{sif_name('served/small')}/blobs/{manifest['config']['digest']}",
        timeout=60,
    )
    assert config.content == b"{}"
    # The access log names the source's upstream for a converted image.
    logged = [
        line
        for line in proxy.log().splitlines()
        if f'"GET /v2/{sif_name("served/small")}/manifests/1" 200 ' in line
    ]
    assert logged and all(line.endswith(" u") for line in logged)
    # A second pull is served from the store: nothing is converted again.
    _pull(proxy, "served/small", "1", tmp_path / "again")
    assert _conversions(proxy) == 1


def test_the_tag_follows_the_source_tag(make_proxy, upstream, tmp_path: Path):
    proxy = make_proxy({"u": upstream_entry(upstream.url)}, tag_ttl_seconds=0)
    push_image(upstream.url, "served/moving", "1", small_image("before"))
    before = _pull(proxy, "served/moving", "1", tmp_path / "before").read_bytes()

    moved = push_image(upstream.url, "served/moving", "1", small_image("after"))
    after = _pull(proxy, "served/moving", "1", tmp_path / "after").read_bytes()

    assert after != before
    direct = converted_directly(proxy.cache_root, "served/moving", moved, tmp_path / "d.sif")
    assert after == direct.path.read_bytes()
    assert _conversions(proxy) == 2
    tags = requests.get(f"{proxy.url}/v2/{sif_name('served/moving')}/tags/list", timeout=60)
    assert tags.json() == {"name": sif_name("served/moving"), "tags": ["1"]}


def test_digests_name_the_sif_and_the_source_digest_is_an_immutable_tag(
    make_proxy, upstream, tmp_path: Path
):
    source = push_image(upstream.url, "served/pinned", "1", small_image("pinned"))
    proxy = make_proxy({"u": upstream_entry(upstream.url)})
    name = sif_name("served/pinned")

    by_source_digest = _manifest(proxy, name, f"sha256-{source.hex}")
    by_tag = _manifest(proxy, name, "1")

    assert by_source_digest.status_code == by_tag.status_code == 200
    assert by_source_digest.content == by_tag.content
    sif_manifest = by_tag.headers["Docker-Content-Digest"]
    by_digest = _manifest(proxy, name, sif_manifest)
    assert by_digest.status_code == 200 and by_digest.content == by_tag.content
    wrong = _manifest(proxy, name, str(source))  # not bytes hashing to it: never served
    assert wrong.status_code == 404
    assert f"use the tag sha256-{source.hex}" in wrong.json()["errors"][0]["message"]
    assert _conversions(proxy) == 1
    pulled = oras_pull(proxy.host, f"served/pinned@{sif_manifest}", tmp_path, under="sif/up.test")
    assert (
        Path(pulled[0]).read_bytes()
        == requests.get(
            f"{proxy.url}/v2/{name}/blobs/{json.loads(by_tag.content)['layers'][0]['digest']}",
            timeout=60,
        ).content
    )


def _multi_platform(upstream, repository: str) -> dict[str, Digest]:
    children = {
        "linux/amd64": small_image("amd64"),
        "linux/arm64/v8": small_image("arm64", architecture="arm64", variant="v8"),
        "linux/arm/v7": small_image("arm", architecture="arm", variant="v7"),
    }
    push_index(upstream.url, repository, "1", children)
    return {platform: child.digest for platform, child in children.items()}


def test_every_platform_has_a_name(make_proxy, upstream, tmp_path: Path):
    digests = _multi_platform(upstream, "served/multi")
    proxy = make_proxy({"u": upstream_entry(upstream.url)}, sif_tree=str(tmp_path / "tree"))

    amd64 = _pull(proxy, "served/multi", "1", tmp_path / "amd64")
    arm64 = _pull(proxy, "served/multi", "1", tmp_path / "arm64", "sif-linux-arm64")
    arm = _pull(proxy, "served/multi", "1", tmp_path / "arm", "sif-linux-arm-v7")

    assert "Primary Architecture: amd64" in siftool("header", amd64)
    assert "Primary Architecture: arm64" in siftool("header", arm64)
    assert "Primary Architecture: arm" in siftool("header", arm)
    direct = converted_directly(
        proxy.cache_root, "served/multi", digests["linux/arm64/v8"], tmp_path / "d.sif"
    )
    assert arm64.read_bytes() == direct.path.read_bytes()
    # The default platform spelt out is the same repository as the namespace alone.
    spelt = _manifest(proxy, "sif-linux-amd64/up.test/served/multi", "1")
    assert spelt.content == _manifest(proxy, sif_name("served/multi"), "1").content
    missing = _manifest(proxy, "sif-linux-s390x/up.test/served/multi", "1")
    assert missing.status_code == 404
    message = missing.json()["errors"][0]["message"]
    assert "no image for linux/s390x" in message and "linux/arm64/v8" in message
    push_image(upstream.url, "served/amd64-only", "1", small_image("only"))
    wrong_arch = _manifest(proxy, "sif-linux-arm64/up.test/served/amd64-only", "1")
    assert wrong_arch.status_code == 404 and "is for linux/amd64" in wrong_arch.text
    assert _conversions(proxy) == 3
    # The SIF tree names each platform's file.
    tree = tmp_path / "tree" / UPSTREAM_PREFIX / "served" / "multi"
    assert (tree / "1.sif").read_bytes() == amd64.read_bytes()
    assert (tree / "1+linux-arm64.sif").read_bytes() == arm64.read_bytes()
    assert (tree / "1+linux-arm-v7.sif").read_bytes() == arm.read_bytes()
    catalog = requests.get(f"{proxy.url}/v2/_catalog", timeout=60).json()["repositories"]
    assert {
        f"sif/{UPSTREAM_PREFIX}/served/multi",
        f"sif-linux-arm64/{UPSTREAM_PREFIX}/served/multi",
        f"sif-linux-arm-v7/{UPSTREAM_PREFIX}/served/multi",
        f"{UPSTREAM_PREFIX}/served/multi",
    } <= set(catalog)


def test_a_pull_waits_at_most_max_wait_then_the_conversion_is_served(
    make_proxy, upstream, tmp_path: Path
):
    push_image(upstream.url, "served/waited", "1", small_image("waited"))
    proxy = make_proxy({"u": upstream_entry(upstream.url)}, sif={"max_wait_seconds": 0})

    first = _manifest(proxy, sif_name("served/waited"), "1")

    assert first.status_code == 503
    assert first.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "being converted to a SIF" in first.json()["errors"][0]["message"]
    assert first.headers["Retry-After"] == "30"
    deadline = time.monotonic() + 120
    while (later := _manifest(proxy, sif_name("served/waited"), "1")).status_code == 503:
        assert time.monotonic() < deadline, "the conversion never finished"
        time.sleep(0.2)
    assert later.status_code == 200
    assert _conversions(proxy) == 1


def test_a_bad_image_is_refused_by_name_and_not_converted_again(
    make_proxy, upstream, tmp_path: Path
):
    bad = image([layer([Entry("ok", data=b"1")]), layer([Entry("../escape", data=b"x")])])
    push_image(upstream.url, "served/bad", "1", bad)
    proxy = make_proxy({"u": upstream_entry(upstream.url)})

    responses = [_manifest(proxy, sif_name("served/bad"), "1") for _ in range(3)]

    for response in responses:
        assert response.status_code == 422
        error = response.json()["errors"][0]
        assert error["code"] == "MANIFEST_INVALID"
        assert f"{UPSTREAM_PREFIX}/served/bad@{bad.digest}" in error["message"]
        assert f"layer 2 of 2 ({bad.layers[1].digest})" in error["message"]
        assert "escapes the root" in error["message"]
    assert _conversions(proxy) == 1  # remembered: not converted in a loop
    assert [p.name for p in (proxy.cache_root / "tmp").iterdir()] == []
    assert not (proxy.cache_root / "repositories" / "sif").exists()
    stored = set(proxy.stored_blobs())
    assert stored == {bad.digest.hex, *(Digest.parse(b.digest).hex for b in bad.layers)} | {
        json.loads(bad.manifest)["config"]["digest"][7:]
    }


ALICE = ("alice", "alice's password")
BOB = ("bob", "bob's password")


def test_a_restricted_image_stays_restricted_as_a_sif(make_proxy, upstream, tmp_path: Path):
    push_image(upstream.url, "licensed/tool", "1", small_image("licensed"))
    rules = [{"repositories": ["licensed/*"], "access": "restricted", "groups": ["licensed"]}]
    auth = {
        "htpasswd": str(write_htpasswd(tmp_path / "htpasswd", dict([ALICE, BOB]))),
        "groups_file": str(write_groups(tmp_path / "groups", {"licensed": ["alice"]})),
    }
    proxy = make_proxy({"u": upstream_entry(upstream.url, rules=rules)}, auth=auth)
    name = sif_name("licensed/tool")

    anonymous = _manifest(proxy, name, "1")
    assert anonymous.status_code == 401
    assert f'scope="repository:{name}:pull"' in anonymous.headers["WWW-Authenticate"]
    assert _manifest(proxy, name, "1", auth=BOB).status_code == 403
    for spelling in (name, "sif-linux-arm64/up.test/licensed/tool", "sif/licensed/tool"):
        assert _manifest(proxy, spelling, "1").status_code == 401
    assert _conversions(proxy) == 0
    files = oras_login_pull(proxy.host, *ALICE, "licensed/tool:1", tmp_path, under="sif/up.test")
    assert "FS (Squashfs/*System/amd64)" in siftool("list", files[0])
    sif_layer = json.loads(_manifest(proxy, name, "1", auth=ALICE).content)["layers"][0]
    blob = f"{proxy.url}/v2/{name}/blobs/{sif_layer['digest']}"
    assert requests.get(blob, timeout=60).status_code == 401
    assert requests.get(blob, auth=BOB, timeout=60).status_code == 403
    catalog = requests.get(f"{proxy.url}/v2/_catalog", auth=BOB, timeout=60).json()
    assert name not in catalog["repositories"]
    catalog = requests.get(f"{proxy.url}/v2/_catalog", auth=ALICE, timeout=60).json()
    assert name in catalog["repositories"]


@pytest.mark.parametrize("namespace", ["containers"])
def test_the_namespace_is_configurable(make_proxy, upstream, tmp_path: Path, namespace: str):
    push_image(upstream.url, "served/renamed", "1", small_image("renamed"))
    proxy = make_proxy({"u": upstream_entry(upstream.url)}, sif={"namespace": namespace})
    pulled = _pull(proxy, "served/renamed", "1", tmp_path, namespace)
    assert "FS (Squashfs/*System/amd64)" in siftool("list", pulled)
    assert _manifest(proxy, sif_name("served/renamed"), "1").status_code == 404


def test_gc_evicts_converted_images_but_not_pinned_ones(make_proxy, upstream, tmp_path: Path):
    for repository in ("gc/pinned", "gc/evicted"):
        push_image(upstream.url, repository, "1", small_image(repository))
    pin = f"sif/{UPSTREAM_PREFIX}/gc/pinned:1"
    proxy = make_proxy({"u": upstream_entry(upstream.url)}, pins=[pin])
    pinned = _pull(proxy, "gc/pinned", "1", tmp_path / "pinned")
    _pull(proxy, "gc/evicted", "1", tmp_path / "evicted")

    collected = run_mirror(proxy.config_path, "gc", "--max-size", "0")

    assert collected.returncode == 0, collected.stderr
    assert f"evicted sif/{UPSTREAM_PREFIX}/gc/evicted:1" in collected.stdout
    assert f"evicted {pin}" not in collected.stdout
    stored = proxy.stored_blobs()
    assert hashlib.sha256(pinned.read_bytes()).hexdigest() in stored
    verified = run_mirror(proxy.config_path, "verify")
    assert verified.returncode == 0 and "corrupt" not in verified.stdout
    # The pinned SIF is served as it is; the evicted one is converted again.
    assert _pull(proxy, "gc/pinned", "1", tmp_path / "again").read_bytes() == pinned.read_bytes()
    assert _conversions(proxy) == 2
    again = _pull(proxy, "gc/evicted", "1", tmp_path / "reconverted")
    assert _conversions(proxy) == 3
    assert hashlib.sha256(again.read_bytes()).hexdigest() in proxy.stored_blobs()
    # ... and tagged in the store again, so gc and the catalog see it
    dry_run = run_mirror(proxy.config_path, "gc", "--max-size", "0", "--dry-run")
    assert f"would evict sif/{UPSTREAM_PREFIX}/gc/evicted:1" in dry_run.stdout
