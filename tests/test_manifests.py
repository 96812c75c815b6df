"""Classification of manifests, including every SIF generation's quirks."""

import json

from mirror.manifests import Kind, parse

HEX = "b" * 64
SIF_LAYER = {"mediaType": "application/vnd.sylabs.sif.layer.v1.sif", "size": 40960,
             "digest": f"sha256:{'c' * 64}"}


def _manifest(config_type, layers, media_type=None):
    doc = {"schemaVersion": 2,
           "config": {"mediaType": config_type, "size": 2, "digest": f"sha256:{HEX}"},
           "layers": layers}
    if media_type:
        doc["mediaType"] = media_type
    return json.dumps(doc).encode()


def test_oci_image():
    parsed = parse(_manifest("application/vnd.oci.image.config.v1+json", [SIF_LAYER | {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}]),
        "application/vnd.oci.image.manifest.v1+json")
    assert parsed.kind is Kind.IMAGE
    assert [str(d) for d in parsed.blob_digests] == [f"sha256:{HEX}", f"sha256:{'c' * 64}"]


def test_sif_generations_are_all_sif():
    oci, docker = ("application/vnd.oci.image.manifest.v1+json",
                   "application/vnd.docker.distribution.manifest.v2+json")
    variants = [
        (_manifest("application/vnd.sylabs.sif.config.v1+json", [SIF_LAYER], oci), oci),
        (_manifest("application/vnd.unknown.config.v1+json", [SIF_LAYER]), oci),  # no mediaType
        (_manifest("application/vnd.sylabs.sif.config.v1+json", [SIF_LAYER], docker), docker),
        (_manifest("application/vnd.sylabs.sif.config.v1", [SIF_LAYER | {
            "mediaType": "appliciation/vnd.sylabs.sif.layer.tar"}], oci), oci),
    ]
    for body, media_type in variants:
        assert parse(body, media_type).kind is Kind.SIF


def test_index_without_media_type_field():
    body = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 10,
         "digest": f"sha256:{HEX}", "platform": {"architecture": "amd64", "os": "linux"}},
        {"digest": "not-a-digest"}]}).encode()
    parsed = parse(body, "application/vnd.oci.image.index.v1+json")
    assert parsed.kind is Kind.INDEX
    assert [d.platform["architecture"] for d in parsed.manifests] == ["amd64"]
    assert parsed.blob_digests == []


def test_garbage_is_unknown_not_an_error():
    for body in (b"", b"\xff\xfe", b"[]", b'{"layers": "x"}', b"null"):
        assert parse(body, "application/octet-stream").kind is Kind.UNKNOWN
