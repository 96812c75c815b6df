"""Classification of manifests, including every SIF generation's quirks."""

import json

from mirror.manifests import Kind, parse

HEX = "b" * 64
SIF_LAYER = {
    "mediaType": "application/vnd.sylabs.sif.layer.v1.sif",
    "size": 40960,
    "digest": f"sha256:{'c' * 64}",
}


def _manifest(config_type, layers, media_type=None):
    doc = {
        "schemaVersion": 2,
        "config": {"mediaType": config_type, "size": 2, "digest": f"sha256:{HEX}"},
        "layers": layers,
    }
    if media_type:
        doc["mediaType"] = media_type
    return json.dumps(doc).encode()


def test_oci_image():
    parsed = parse(
        _manifest(
            "application/vnd.oci.image.config.v1+json",
            [SIF_LAYER | {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}],
        ),
        "application/vnd.oci.image.manifest.v1+json",
    )
    assert parsed.kind is Kind.IMAGE
    assert [str(d) for d in parsed.blob_digests] == [f"sha256:{HEX}", f"sha256:{'c' * 64}"]


def test_sif_generations_are_all_sif():
    oci, docker = (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
    variants = [
        (_manifest("application/vnd.sylabs.sif.config.v1+json", [SIF_LAYER], oci), oci),
        (_manifest("application/vnd.unknown.config.v1+json", [SIF_LAYER]), oci),  # no mediaType
        (_manifest("application/vnd.sylabs.sif.config.v1+json", [SIF_LAYER], docker), docker),
        (
            _manifest(
                "application/vnd.sylabs.sif.config.v1",
                [SIF_LAYER | {"mediaType": "appliciation/vnd.sylabs.sif.layer.tar"}],
                oci,
            ),
            oci,
        ),
    ]
    for body, media_type in variants:
        assert parse(body, media_type).kind is Kind.SIF


def test_index_without_media_type_field():
    body = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "size": 10,
                    "digest": f"sha256:{HEX}",
                    "platform": {"architecture": "amd64", "os": "linux"},
                },
                {"digest": "not-a-digest"},
            ],
        }
    ).encode()
    parsed = parse(body, "application/vnd.oci.image.index.v1+json")
    assert parsed.kind is Kind.INDEX
    assert [d.platform["architecture"] for d in parsed.manifests] == ["amd64"]
    assert parsed.blob_digests == []


def test_garbage_is_unknown_not_an_error():
    for body in (b"", b"\xff\xfe", b"[]", b'{"layers": "x"}', b"null"):
        assert parse(body, "application/octet-stream").kind is Kind.UNKNOWN


def test_closure_walks_index_children_once_and_lists_missing_manifests():
    from mirror.manifests import closure
    from mirror.reference import Digest

    layer, config, child, gone = (Digest(c * 64) for c in "abcd")
    child_body = _manifest(
        "application/vnd.oci.image.config.v1+json",
        [{"mediaType": "x", "size": 1, "digest": str(layer)}],
    )
    child_body = child_body.replace(f"sha256:{HEX}".encode(), str(config).encode())
    index = json.dumps(
        {"manifests": [{"digest": str(child)}, {"digest": str(child)}, {"digest": str(gone)}]}
    ).encode()
    bodies = {Digest("e" * 64).hex: index, child.hex: child_body}
    manifests, blobs = closure(Digest("e" * 64), lambda d: bodies.get(d.hex))
    assert [d.hex[0] for d in manifests] == ["e", "d", "c"]  # gone is listed, not walked
    assert sorted(d.hex[0] for d in blobs) == ["a", "b"]


def test_platform_text():
    from mirror.manifests import platform_text

    assert (
        platform_text({"os": "linux", "architecture": "arm64", "variant": "v8"}) == "linux/arm64/v8"
    )
    assert platform_text({"os": "linux", "architecture": "amd64"}) == "linux/amd64"
    for bad in (None, {}, {"os": "linux"}, {"os": 1, "architecture": "x"}, "linux/amd64"):
        assert platform_text(bad) == ""
