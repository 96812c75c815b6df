"""Real clients push into the site's own namespace of a mirror with logins and pull the
result back: skopeo (from the real upstream registry), podman and buildah (after a login),
the oras Python SDK (a SIF, and a signature with a `subject`), and a SIF in the exact shape
of every Apptainer/Singularity generation with the requests those clients make (README,
"Clients that push"). A push to another user's namespace is refused with DENIED, and a
quota breach leaves nothing behind."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import oras.client
import oras.oci
import pytest

from tests.conftest import upstream_entry
from tests.support import oci
from tests.support.accounts import auth_table
from tests.support.clients import Buildah, Podman, oras_login_pull, skopeo
from tests.support.seed import RegistryClient
from tests.support.sif_pushes import SHAPES, SifShape, pull_like_apptainer, push_sif
from tests.support.sifwriter import example_sif, make_squashfs

ALICE = ("alice", "alice's pass phrase")
BOB = ("bob", "bob-pw-2024")
LOCAL = {"prefix": "local", "access": "authenticated"}


@pytest.fixture
def logins(tmp_path) -> dict:
    return auth_table(tmp_path, dict([ALICE, BOB]), {"hpc": ["alice"]})


@pytest.fixture
def registry(make_proxy, upstream, seeded, logins):
    """A mirror with logins whose `local/` namespace takes pushes."""
    return make_proxy({"test": upstream_entry(upstream.url)}, auth=logins, local=LOCAL)


@pytest.fixture
def sif_file(tmp_path) -> Path:
    path = tmp_path / "tool_1.0.sif"
    path.write_bytes(example_sif(make_squashfs(tmp_path), name="tool", version="1.0").data)
    return path


def as_user(registry, user: tuple[str, str]) -> RegistryClient:
    return RegistryClient(registry.url, username=user[0], password=user[1])


def creds(user: tuple[str, str]) -> str:
    return f"{user[0]}:{user[1]}"


def copy(source: str, dest: str, *extra: str) -> None:
    result = skopeo(
        "copy", "--src-tls-verify=false", "--dest-tls-verify=false", *extra, source, dest
    )
    assert result.returncode == 0, result.stderr


def test_skopeo_copies_images_from_the_upstream_into_a_group_namespace(
    registry, upstream, seeded, tmp_path
):
    for reference, target, extra in (
        ("tools/alpha:1.0", "local/hpc/app:2", ()),
        ("multi/app:1.0", "local/hpc/multi:1.0", ("--all",)),
    ):
        copy(
            f"docker://{upstream.host}/{reference}",
            f"docker://{registry.host}/{target}",
            "--preserve-digests", "--dest-creds", creds(ALICE), *extra,
        )  # fmt: skip
    alpha = seeded["tools/alpha:1.0"]
    pulled = tmp_path / "pulled"
    copy(f"docker://{registry.host}/local/hpc/app:2", f"dir:{pulled}", "--src-creds", creds(ALICE))
    assert oci.sha256_digest((pulled / "manifest.json").read_bytes()) == alpha.digest
    client = as_user(registry, BOB)  # [local] access = "authenticated": any user reads
    try:
        assert client.get_manifest("local/hpc/app", "2").content == alpha.manifest
        for blob in alpha.blobs:
            body = client.get_blob("local/hpc/app", blob["digest"]).content
            assert oci.sha256_digest(body) == blob["digest"]
        multi = seeded["multi/app:1.0"]
        assert client.get_manifest("local/hpc/multi", "1.0").content == multi.manifest
        for child in multi.children:
            assert client.get_manifest("local/hpc/multi", child.digest).content == child.manifest
    finally:
        client.close()


def test_podman_logs_in_pushes_and_another_podman_pulls_it_back(
    registry, upstream, seeded, tmp_path
):
    pushed = f"{registry.host}/local/alice/tool:1.0"
    digest_file = tmp_path / "digest"
    with Podman(tmp_path / "alice") as podman:
        podman.pull(f"{upstream.host}/tools/beta:2.0")
        podman.run("tag", f"{upstream.host}/tools/beta:2.0", pushed)
        assert podman.login(registry.host, *ALICE)
        podman.run("push", "--tls-verify=false", "--digestfile", str(digest_file), pushed)
    digest = digest_file.read_text().strip()
    with Podman(tmp_path / "bob") as podman:
        assert podman.login(registry.host, *BOB)
        assert podman.pull(pushed) == digest
    client = as_user(registry, ALICE)
    try:
        manifest = client.get_manifest("local/alice/tool", "1.0")
        assert oci.sha256_digest(manifest.content) == digest
    finally:
        client.close()


def test_buildah_builds_pushes_to_a_group_and_skopeo_pulls_it_back(registry, tmp_path):
    (tmp_path / "hello.txt").write_text("built on the login node\n")
    with Buildah(tmp_path / "buildah") as buildah:
        container = buildah.run("from", "scratch").stdout.strip()
        buildah.run("copy", container, str(tmp_path / "hello.txt"), "/hello.txt")
        buildah.run("config", "--cmd", "/hello.txt", container)
        buildah.run("commit", "--format", "oci", container, "built:1")
        assert buildah.login(registry.host, *ALICE)
        buildah.run(
            "push", "--tls-verify=false", "--digestfile", str(tmp_path / "digest"),
            "built:1", f"docker://{registry.host}/local/hpc/built:1",
        )  # fmt: skip
    pulled = tmp_path / "pulled"
    copy(
        f"docker://{registry.host}/local/hpc/built:1", f"dir:{pulled}", "--src-creds", creds(ALICE)
    )
    manifest = (pulled / "manifest.json").read_bytes()
    assert oci.sha256_digest(manifest) == (tmp_path / "digest").read_text().strip()
    [layer] = json.loads(manifest)["layers"]
    assert (pulled / layer["digest"].removeprefix("sha256:")).exists()


def oras_client(registry, user: tuple[str, str], workdir: Path) -> oras.client.OrasClient:
    """The SDK with Basic credentials on every request: its default token backend keeps the
    first token it gets (a pull token, from the HEAD before an upload) and so fails every
    push, against distribution as well (oras-py 0.2.43)."""
    workdir.mkdir(parents=True, exist_ok=True)
    client = oras.client.OrasClient(hostname=registry.host, insecure=True, auth_backend="basic")
    client.login(
        username=user[0], password=user[1], hostname=registry.host,
        config_path=str(workdir / "config.json"),
    )  # fmt: skip
    return client


def test_the_oras_sdk_pushes_a_sif_and_a_signature_of_it(registry, sif_file, tmp_path):
    target = f"{registry.host}/local/alice/tool:1.0"
    client = oras_client(registry, ALICE, tmp_path / "alice")
    client.push(
        target=target, files=[f"{sif_file}:{oci.SIF_LAYER}"], disable_path_validation=True,
        manifest_config=f"/dev/null:{oci.SIF_CONFIG}", do_chunked=True, chunk_size=16 << 10,
    )  # fmt: skip
    files = oras_login_pull(registry.host, *BOB, "alice/tool:1.0", tmp_path / "bob", under="local")
    assert [Path(f).read_bytes() for f in files] == [sif_file.read_bytes()]

    reader = as_user(registry, ALICE)
    try:
        manifest = reader.get_manifest("local/alice/tool", "1.0").content
        subject = oras.oci.Subject(oci.OCI_MANIFEST, oci.sha256_digest(manifest), len(manifest))
        signature = tmp_path / "tool.sig"
        signature.write_bytes(b"-----BEGIN PGP SIGNATURE-----\nnot really\n")
        client.push(
            target=f"{registry.host}/local/alice/tool:sig", disable_path_validation=True,
            files=[f"{signature}:application/vnd.example.signature.v1"],
            manifest_config="/dev/null:application/vnd.example.signature.config.v1+json",
            subject=subject,
        )  # fmt: skip
        signed = reader.get_manifest("local/alice/tool", "sig").content
        assert json.loads(signed)["subject"] == asdict(subject)
        referrers = reader.request(
            "GET", f"/v2/local/alice/tool/referrers/{subject.digest}",
            scope="repository:local/alice/tool:pull",
        )  # fmt: skip
        assert referrers.status_code == 200, referrers.text
        [entry] = referrers.json()["manifests"]
        assert entry["digest"] == oci.sha256_digest(signed)
        assert entry["size"] == len(signed)
    finally:
        reader.close()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.generation)
def test_a_sif_pushed_as_each_generation_pushes_pulls_back_as_apptainer_pulls(
    registry, sif_file, shape: SifShape
):
    sif = sif_file.read_bytes()
    repository = f"local/alice/{shape.generation.replace('.', '-')}"
    writer, reader = as_user(registry, ALICE), as_user(registry, BOB)
    try:
        manifest = push_sif(writer, repository, "1.0", shape, sif, sif_file.name)
        pulled = pull_like_apptainer(reader, repository, "1.0", shape.legacy_pull)
    finally:
        writer.close()
        reader.close()
    assert pulled.manifest == manifest
    assert pulled.content_type == shape.put_type
    assert pulled.sif == sif


@pytest.mark.parametrize("client", ["skopeo", "podman"])
def test_a_push_into_another_users_namespace_is_denied(
    registry, upstream, seeded, client, tmp_path
):
    source = f"{upstream.host}/tools/alpha:1.0"
    target = f"{registry.host}/local/alice/stolen:1"
    if client == "skopeo":
        result = skopeo(
            "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
            "--dest-creds", creds(BOB), f"docker://{source}", f"docker://{target}",
        )  # fmt: skip
    else:
        with Podman(tmp_path / "bob") as podman:
            podman.pull(source)
            podman.run("tag", source, target)
            assert podman.login(registry.host, *BOB)
            result = podman.run("push", "--tls-verify=false", target, check=False)
    assert result.returncode != 0
    assert "denied" in result.stderr.lower(), result.stderr
    assert "bob" in result.stderr, result.stderr  # the mirror's own message, not a guess
    client_of_alice = as_user(registry, ALICE)
    try:
        assert client_of_alice.get_manifest("local/alice/stolen", "1").status_code == 404
    finally:
        client_of_alice.close()


def test_a_quota_breach_seen_by_skopeo_leaves_nothing_partial(
    make_proxy, upstream, seeded, logins, tmp_path
):
    quota = {**LOCAL, "quota": "8M"}
    registry = make_proxy({"test": upstream_entry(upstream.url)}, auth=logins, local=quota)
    big = seeded["big/blob:1.0"]  # one 64 MiB + 1 byte layer
    result = skopeo(
        "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--dest-creds", creds(ALICE),
        f"docker://{upstream.host}/big/blob:1.0", f"docker://{registry.host}/local/alice/big:1",
    )  # fmt: skip
    assert result.returncode != 0
    assert "quota" in result.stderr.lower(), result.stderr
    assert "local/alice" in result.stderr or "alice" in result.stderr, result.stderr
    layer_hex = big.layers[0]["digest"].removeprefix("sha256:")
    assert layer_hex not in registry.stored_blobs()
    for hex_digest in registry.stored_blobs():  # whatever is there is whole and verified
        data = registry.blob_path(hex_digest).read_bytes()
        assert oci.sha256_digest(data) == f"sha256:{hex_digest}"
    uploads = registry.cache_root / "uploads"
    assert not uploads.exists() or not [p for p in uploads.rglob("*") if p.is_file()]


def test_skopeo_pushes_over_https_trusting_the_site_ca(
    make_proxy, upstream, seeded, logins, listener_ca, tmp_path
):
    registry = make_proxy(
        {"test": upstream_entry(upstream.url)}, auth=logins, local=LOCAL, listener_ca=listener_ca
    )
    cert_dir = listener_ca.cert_dir(tmp_path / "certs")
    result = skopeo(
        "copy", "--src-tls-verify=false", "--dest-cert-dir", str(cert_dir),
        "--dest-creds", creds(ALICE), "--preserve-digests",
        f"docker://{upstream.host}/tools/beta:2.0", f"docker://{registry.host}/local/alice/beta:2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    inspected = skopeo(
        "inspect", "--raw", "--cert-dir", str(cert_dir), "--creds", creds(BOB),
        f"docker://{registry.host}/local/alice/beta:2",
    )  # fmt: skip
    assert inspected.returncode == 0, inspected.stderr
    assert inspected.stdout.encode().rstrip(b"\n") == seeded["tools/beta:2.0"].manifest
