"""The ORAS manifest a converted SIF is served with: the shape Apptainer 1.3.1 and later
push (an OCI manifest; config `application/vnd.sylabs.sif.config.v1+json` holding `{}`; one
layer, the SIF file, with its title), as compact JSON in ggcr's field order, so the bytes,
and the digest clients verify, are the same on every instance."""

from __future__ import annotations

import hashlib
import json

from mirror.reference import OCI_MANIFEST, SIF_LAYER, Digest

SIF_CONFIG = "application/vnd.sylabs.sif.config.v1+json"
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DIGEST = Digest(hashlib.sha256(EMPTY_CONFIG).hexdigest())
TITLE = "org.opencontainers.image.title"


def sif_manifest(sif_digest: Digest, sif_size: int, title: str) -> bytes:
    """The manifest of one SIF file (the layer) named `title` (the file name ORAS clients
    save it as)."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": SIF_CONFIG,
            "size": len(EMPTY_CONFIG),
            "digest": str(EMPTY_CONFIG_DIGEST),
        },
        "layers": [
            {
                "mediaType": SIF_LAYER,
                "size": sif_size,
                "digest": str(sif_digest),
                "annotations": {TITLE: title},
            }
        ],
    }
    return json.dumps(document, separators=(",", ":")).encode()
