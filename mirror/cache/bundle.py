"""Bundles: carry a set of cached images into an air-gapped site as one tar file.

A bundle is an OCI image layout in a tar (`oci-layout`, `index.json`, `blobs/sha256/*`),
so ordinary tools can read it too. Each `index.json` entry records the mirror's
repository (`<prefix>/<name>`) and tag in annotations, so the importing mirror serves the
images under the same names. Export reads only the store. Import verifies every blob
against its digest and checks that every manifest's references are present before
anything becomes visible: a damaged or tampered bundle is refused, naming the bad blob,
and leaves nothing in the cache.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mirror.cache.blob_writer import BlobWriter
from mirror.cache.metadata import MetadataCache
from mirror.cache.store import ContentStore, TagRecord
from mirror.errors import DigestMismatch, MirrorError
from mirror.manifests import closure, parse
from mirror.reference import (
    OCI_INDEX,
    Digest,
    Repository,
    check_name,
    check_prefix,
    check_tag,
)

REPOSITORY_KEY = "io.github.hpc-mirror.repository"
TAG_KEY = "org.opencontainers.image.ref.name"
_BLOB_NAME = re.compile(r"blobs/sha256/([a-f0-9]{64})")
_CHUNK = 4 * 1024 * 1024


class BundleError(MirrorError):
    """A bundle cannot be exported (an image is not fully cached, or not named by a tag)
    or imported (it is damaged, tampered with or incomplete: nothing was imported)."""


@dataclass(frozen=True)
class BundleImage:
    repo: Repository
    tag: str
    digest: Digest
    media_type: str

    def __str__(self) -> str:
        return f"{self.repo}:{self.tag}"


# -- export ---------------------------------------------------------------------------------
def export(store: ContentStore, images: list[tuple[Repository, str]], out: IO[bytes]) -> int:
    """Write the images (repository, tag), as cached, to `out` as a tar; return the number
    of blobs written. Raises BundleError naming an image that is not fully cached."""
    entries, blobs = [], {}
    for repo, tag in images:
        record = store.read_tag(repo, tag)
        if record is None:
            raise BundleError(f"{repo}:{tag} is not cached (prefetch it first)")
        for digest in _closure(store, record.digest, f"{repo}:{tag}"):
            blobs[digest.hex] = digest
        entries.append(
            {
                "mediaType": record.media_type,
                "digest": str(record.digest),
                "size": store.blob_size(record.digest),
                "annotations": {REPOSITORY_KEY: str(repo), TAG_KEY: tag},
            }
        )
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        _add_bytes(tar, "index.json", json.dumps(index, indent=1).encode())
        for hex_digest in sorted(blobs):
            path = store.blob_path(blobs[hex_digest])
            info = tar.gettarinfo(str(path), arcname=f"blobs/sha256/{hex_digest}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o444
            with open(path, "rb") as blob:
                tar.addfile(info, blob)
    return len(blobs)


def _closure(store: ContentStore, digest: Digest, image: str) -> list[Digest]:
    """The manifest, its children and every blob they reference; all must be cached."""
    manifests, blobs = closure(digest, store.read_blob)
    for piece in manifests + blobs:
        if store.blob_size(piece) is None:
            raise BundleError(
                f"{image} is not fully cached: {piece} is missing (prefetch it first)"
            )
    return manifests + blobs


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o444
    tar.addfile(info, io.BytesIO(data))


# -- import ---------------------------------------------------------------------------------
def import_bundle(
    store: ContentStore, metadata: MetadataCache, source: IO[bytes]
) -> list[BundleImage]:
    """Verify the whole bundle, then add it to the cache; raise BundleError before any of
    it is visible if anything is wrong."""
    staged: dict[str, BlobWriter] = {}
    try:
        images = _stage(store, source, staged)
        _check_complete(store, images, staged)
        for writer in staged.values():
            writer.persist()
    except BaseException:
        for writer in staged.values():
            writer.abort()
        raise
    now = time.time()
    for image in images:
        _link(store, metadata, image.repo, image.digest, image.media_type)
        metadata.put_tag(image.repo, image.tag, TagRecord(image.digest, image.media_type, now))
    metadata.forget_repositories()
    return images


def _stage(
    store: ContentStore, source: IO[bytes], staged: dict[str, BlobWriter]
) -> list[BundleImage]:
    images: list[BundleImage] | None = None
    try:
        with tarfile.open(fileobj=source, mode="r|*") as tar:
            for member in tar:
                if member.name == "index.json" and member.isfile():
                    images = _read_index(_extract(tar, member).read())
                elif member.name == "oci-layout" or member.isdir():
                    continue
                elif (match := _BLOB_NAME.fullmatch(member.name)) and member.isfile():
                    _stage_blob(store, Digest(match.group(1)), _extract(tar, member), staged)
                else:
                    raise BundleError(f"unexpected entry {member.name[:120]!r} in the bundle")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(f"the bundle is not a readable tar file: {exc}") from None
    if images is None:
        raise BundleError("the bundle has no index.json")
    return images


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    """The content of a member its caller found to be a regular file."""
    data = tar.extractfile(member)
    if data is None:
        raise BundleError(f"entry {member.name[:120]!r} of the bundle is not a file")
    return data


def _stage_blob(
    store: ContentStore, digest: Digest, data: IO[bytes], staged: dict[str, BlobWriter]
) -> None:
    if digest.hex in staged:
        raise BundleError(f"blob {digest} appears twice in the bundle")
    writer = store.new_writer(digest)
    staged[digest.hex] = writer
    while chunk := data.read(_CHUNK):
        writer.write(chunk)
    try:
        writer.verify()
    except DigestMismatch:
        raise BundleError(
            f"blob {digest} is damaged or was tampered with: its content does not hash to its name"
        ) from None
    writer.seal()


def _read_index(raw: bytes) -> list[BundleImage]:
    try:
        doc = json.loads(raw)
        entries = doc["manifests"]
        images = []
        for entry in entries:
            annotations = entry.get("annotations") or {}
            prefix, _, name = str(annotations[REPOSITORY_KEY]).partition("/")
            images.append(
                BundleImage(
                    Repository(check_prefix(prefix), check_name(name)),
                    check_tag(str(annotations[TAG_KEY])),
                    Digest.parse(str(entry["digest"])),
                    str(entry["mediaType"]),
                )
            )
        return images
    except (ValueError, KeyError, TypeError, AttributeError, MirrorError) as exc:
        detail = exc.message if isinstance(exc, MirrorError) else exc
        raise BundleError(f"index.json of the bundle is not valid: {detail}") from None


def _check_complete(
    store: ContentStore, images: list[BundleImage], staged: dict[str, BlobWriter]
) -> None:
    """Every manifest and everything it references must be in the bundle or the cache."""

    def present(digest: Digest) -> bool:
        return digest.hex in staged or store.blob_size(digest) is not None

    def body(digest: Digest) -> bytes | None:
        writer = staged.get(digest.hex)
        return Path(writer.temp_path).read_bytes() if writer else store.read_blob(digest)

    for image in images:
        manifests, blobs = closure(
            image.digest, lambda digest: body(digest) if present(digest) else None
        )
        for piece in manifests + blobs:
            if not present(piece):
                raise BundleError(f"the bundle is incomplete: {image} needs {piece}")


def _link(
    store: ContentStore, metadata: MetadataCache, repo: Repository, digest: Digest, media_type: str
) -> None:
    body = store.read_blob(digest) or b""
    parsed = parse(body, media_type)
    metadata.link_manifest(repo, digest, media_type, parsed)
    for child in parsed.manifests:
        _link(store, metadata, repo, child.digest, child.media_type)
