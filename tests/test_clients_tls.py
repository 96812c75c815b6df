"""Real clients pull through a mirror that serves HTTPS, trusting the site's CA and with no
insecure flag: skopeo and podman (a certificate directory; registries.conf mirrors without
`insecure`), containerd (`ctr` with a hosts.toml `ca`), the oras SDK and curl `--cacert`."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.conftest import UPSTREAM_PREFIX
from tests.support.clients import (
    Podman,
    containerd_hosts_dir,
    ctr_pull,
    oras_pull,
    skopeo_copy,
)
from tests.support.containerd import ContainerdDaemon


def _registries_conf(mirror_host: str) -> str:
    """A registries.conf sending pulls of up.test to the mirror, as the catalog shows it
    for a mirror served over HTTPS: no `insecure`."""
    return (
        f'[[registry]]\nprefix = "{UPSTREAM_PREFIX}"\nlocation = "{UPSTREAM_PREFIX}"\n'
        f'[[registry.mirror]]\nlocation = "{mirror_host}/{UPSTREAM_PREFIX}"\n'
    )


@pytest.fixture
def containerd(tmp_path: Path):
    with ContainerdDaemon(tmp_path / "ctrd") as daemon:
        yield daemon


def test_skopeo_copies_over_https_trusting_the_ca(tls_proxy, listener_ca, seeded, tmp_path):
    image = seeded["tools/alpha:1.0"]
    dest = tmp_path / "dir"
    cert_dir = listener_ca.cert_dir(tmp_path / "certs")
    skopeo_copy(tls_proxy.host, "tools/alpha:1.0", f"dir:{dest}", cert_dir=cert_dir)
    assert (dest / "manifest.json").read_bytes() == image.manifest


def test_skopeo_follows_a_registries_conf_mirror_without_insecure(
    tls_proxy, listener_ca, seeded, tmp_path
):
    image = seeded["tools/beta:2.0"]
    conf = tmp_path / "registries.conf"
    conf.write_text(_registries_conf(tls_proxy.host))
    result = subprocess.run(
        [
            "skopeo", "--registries-conf", str(conf), "inspect", "--raw",
            "--cert-dir", str(listener_ca.cert_dir(tmp_path / "certs")),
            f"docker://{UPSTREAM_PREFIX}/tools/beta:2.0",
        ],
        capture_output=True, timeout=120,
    )  # fmt: skip
    # up.test does not resolve: only the mirror can have answered.
    assert result.returncode == 0, result.stderr
    assert result.stdout == image.manifest


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_proxy, tmp_path):
    result = subprocess.run(
        [
            "skopeo", "inspect", "--raw", "--cert-dir", str(tmp_path),
            f"docker://{tls_proxy.host}/{UPSTREAM_PREFIX}/tools/alpha:1.0",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "certificate signed by unknown authority" in result.stderr


def test_podman_pulls_over_https_with_a_cert_dir(tls_proxy, listener_ca, seeded, tmp_path):
    reference = f"{tls_proxy.host}/{UPSTREAM_PREFIX}/tools/alpha:1.0"
    with Podman(tmp_path / "podman", ca_file=listener_ca.ca_file) as podman:
        assert podman.pull(reference) == seeded["tools/alpha:1.0"].digest


def test_podman_pulls_through_a_registries_conf_mirror(tls_proxy, listener_ca, seeded, tmp_path):
    with Podman(
        tmp_path / "podman",
        ca_file=listener_ca.ca_file,
        registries_conf=_registries_conf(tls_proxy.host),
    ) as podman:
        digest = podman.pull(f"{UPSTREAM_PREFIX}/tools/beta:2.0")
    assert digest == seeded["tools/beta:2.0"].digest
    assert f"/v2/{UPSTREAM_PREFIX}/tools/beta/manifests/2.0" in tls_proxy.log()


def test_containerd_pulls_through_a_hosts_toml_mirror_with_its_ca(
    tls_proxy, listener_ca, seeded, containerd, tmp_path
):
    hosts = containerd_hosts_dir(
        tmp_path / "certs.d", UPSTREAM_PREFIX, tls_proxy.url, listener_ca.ca_file
    )
    reference = f"{UPSTREAM_PREFIX}/tools/alpha:1.0"
    assert ctr_pull(containerd, reference, hosts) == seeded["tools/alpha:1.0"].digest
    # containerd names the registry it mirrors with ?ns=.
    assert f"/v2/tools/alpha/manifests/1.0?ns={UPSTREAM_PREFIX}" in tls_proxy.log()


def test_oras_sdk_pulls_a_sif_over_https(tls_proxy, listener_ca, seeded, tmp_path):
    image = seeded["sif/tool:1.0"]
    files = oras_pull(tls_proxy.host, "sif/tool:1.0", tmp_path, ca_file=listener_ca.ca_file)
    assert [Path(f).read_bytes() for f in files] == [image.sif.data]


def test_curl_fetches_a_blob_with_cacert(tls_proxy, listener_ca, seeded, tmp_path):
    blob = seeded.big_blob
    out = tmp_path / "blob"
    url = f"{tls_proxy.url}/v2/{UPSTREAM_PREFIX}/big/blob/blobs/{blob.digest}"
    trusted = subprocess.run(
        ["curl", "-sS", "--fail", "--cacert", str(listener_ca.ca_file), "-o", str(out), url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr
    assert f"sha256:{hashlib.sha256(out.read_bytes()).hexdigest()}" == blob.digest
    untrusted = subprocess.run(["curl", "-sS", "-o", "/dev/null", url], capture_output=True)
    assert untrusted.returncode == 60  # the peer's certificate cannot be verified
