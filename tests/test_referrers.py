"""The OCI 1.1 referrers API of the local namespace: a signature and an SBOM pushed with a
`subject`, listed (and filtered by artifactType) for the image they refer to; a 404 for
cached upstream repositories, so clients fall back to the referrers tag schema."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support import oci
from tests.support.accounts import write_htpasswd
from tests.support.local_push import image_shapes, place_blob, push_shape, put_manifest

ALICE = ("alice", "alice's long password")
BOB = ("bob", "bob's long password")
SIGNATURE_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM_TYPE = "application/spdx+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
IMAGE = image_shapes("referrers")[0]


@pytest.fixture
def registry(make_proxy, upstream, seeded, tmp_path):
    auth = {"htpasswd": str(write_htpasswd(tmp_path / "htpasswd", dict([ALICE, BOB])))}
    local = {"prefix": "local", "access": "restricted", "users": ["root"]}  # and writers
    return make_proxy({"test": upstream_entry(upstream.url)}, auth=auth, local=local)


def artifact(
    registry, subject: bytes, blob: bytes, artifact_type: str | None, config_type: str = EMPTY_TYPE
) -> tuple[bytes, str]:
    """Push an artifact manifest about `subject` (OCI 1.1 shape); its bytes and digest."""
    config = b"{}"
    for data in (config, blob):
        place_blob(registry.cache_root, "alice/tool", data)
    doc = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": oci.descriptor_for(config_type, config),
        "layers": [oci.descriptor_for("application/octet-stream", blob)],
        "subject": oci.descriptor_for(oci.OCI_MANIFEST, subject),
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    }
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    manifest = oci.go_json(doc)
    digest = oci.sha256_digest(manifest)
    response = put_manifest(registry, "alice/tool", digest, manifest, oci.OCI_MANIFEST, ALICE)
    assert response.status_code == 201, response.text
    assert response.headers["OCI-Subject"] == oci.sha256_digest(subject)
    return manifest, digest


def referrers(registry, subject: str, auth=ALICE, **query) -> requests.Response:
    return requests.get(
        f"{registry.url}/v2/local/alice/tool/referrers/{subject}",
        params=query,
        auth=auth,
        timeout=60,
    )


def test_a_signature_and_an_sbom_are_listed_for_their_image_and_filtered_by_type(registry):
    image = oci.sha256_digest(IMAGE.manifest)
    assert referrers(registry, image).json()["manifests"] == []
    # A referrer may come before its subject (the spec requires taking it).
    signature, signature_digest = artifact(registry, IMAGE.manifest, b"signature", SIGNATURE_TYPE)
    sbom, sbom_digest = artifact(registry, IMAGE.manifest, b'{"spdx": 1}', None, SBOM_TYPE)
    push_shape(registry, "alice/tool", "1.0", IMAGE, ALICE)
    response = referrers(registry, image)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == oci.OCI_INDEX
    assert "OCI-Filters-Applied" not in response.headers
    index = response.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == oci.OCI_INDEX
    annotations = {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}
    expected = {
        signature_digest: {
            "mediaType": oci.OCI_MANIFEST,
            "digest": signature_digest,
            "size": len(signature),
            "artifactType": SIGNATURE_TYPE,
            "annotations": annotations,
        },
        sbom_digest: {  # no artifactType: the config's media type stands in
            "mediaType": oci.OCI_MANIFEST,
            "digest": sbom_digest,
            "size": len(sbom),
            "artifactType": SBOM_TYPE,
            "annotations": annotations,
        },
    }
    assert {entry["digest"]: entry for entry in index["manifests"]} == expected
    filtered = referrers(registry, image, artifactType=SBOM_TYPE)
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert filtered.json()["manifests"] == [expected[sbom_digest]]
    none = referrers(registry, image, artifactType="application/x-none")
    assert none.json()["manifests"] == []
    # The referrers are manifests of the repository like any other.
    path = f"/v2/local/alice/tool/manifests/{signature_digest}"
    assert requests.get(f"{registry.url}{path}", auth=ALICE, timeout=60).content == signature


def test_a_deleted_referrer_leaves_the_list(registry):
    image = oci.sha256_digest(IMAGE.manifest)
    _, signature_digest = artifact(registry, IMAGE.manifest, b"signature", SIGNATURE_TYPE)
    _, sbom_digest = artifact(registry, IMAGE.manifest, b"sbom", SBOM_TYPE)
    url = f"{registry.url}/v2/local/alice/tool/manifests/{signature_digest}"
    assert requests.delete(url, auth=ALICE, timeout=60).status_code == 202
    listed = [entry["digest"] for entry in referrers(registry, image).json()["manifests"]]
    assert listed == [sbom_digest]


def test_referrers_need_pull_permission_and_the_local_namespace(registry):
    image = oci.sha256_digest(IMAGE.manifest)
    artifact(registry, IMAGE.manifest, b"signature", SIGNATURE_TYPE)
    assert referrers(registry, image, auth=BOB).status_code == 403
    assert referrers(registry, image, auth=None).status_code == 401
    assert referrers(registry, "sha256:nothex", auth=ALICE).status_code == 400
    upstream = requests.get(
        f"{registry.url}/v2/{UPSTREAM_PREFIX}/tools/alpha/referrers/{image}", timeout=60
    )
    assert upstream.status_code == 404  # clients fall back to the referrers tag schema
    assert upstream.json()["errors"][0]["code"] == "UNSUPPORTED"
