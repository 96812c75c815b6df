"""Value objects of the distribution API: digests, repository names, references, media types.

Everything a client sends is checked here against the distribution-spec grammar before any
other module sees it, so that no path built from a name or digest can leave the cache root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mirror.errors import DigestInvalid, NameInvalid, TagInvalid

# distribution-spec: a path component is lowercase alnum separated by '.', '_', '__' or '-'s.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_SHA256_RE = re.compile(r"sha256:([a-f0-9]{64})")
_ANY_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
# A registry host[:port] (lowercase DNS labels): what an upstream prefix and a host name
# of the mirror look like.
REGISTRY_HOST_RE = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]+)?")
# os/architecture[/variant], as image indexes name platforms: linux/amd64, linux/arm/v7.
PLATFORM_RE = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?")
MAX_NAME_LENGTH = 255  # of a repository name, and of host[:port] + "/" + name as clients parse it
DEFAULT_TAG = "latest"  # what an image reference without tag or digest means

# Manifest media types the proxy asks upstream for, richest first: an index or list is
# preferred over a single-platform manifest so one cached tag serves every platform.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MANIFEST_MEDIA_TYPES = (
    OCI_INDEX,
    DOCKER_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
)
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})

SIF_LAYER = "application/vnd.sylabs.sif.layer.v1.sif"
SIF_LAYER_LEGACY = "appliciation/vnd.sylabs.sif.layer.tar"  # sic: Singularity <=3.6
SIF_LAYER_TYPES = frozenset({SIF_LAYER, SIF_LAYER_LEGACY})


@dataclass(frozen=True, slots=True)
class Digest:
    """A sha256 content digest, the only algorithm the store addresses content by."""

    hex: str

    @classmethod
    def parse(cls, text: str) -> "Digest":
        match = _SHA256_RE.fullmatch(text)
        if match:
            return cls(match.group(1))
        if _ANY_DIGEST_RE.fullmatch(text) and not text.startswith("sha256:"):
            raise DigestInvalid(f"unsupported digest algorithm in {text[:80]!r}; only sha256")
        raise DigestInvalid(f"invalid digest {text[:80]!r}")

    def __str__(self) -> str:
        return f"sha256:{self.hex}"


def is_digest(reference: str) -> bool:
    """A manifest reference is a digest when it has an algorithm prefix; else it is a tag."""
    return ":" in reference


def check_reference(reference: str) -> str:
    """Return `reference` if it is a valid digest or tag, else raise DIGEST/TAG_INVALID."""
    if is_digest(reference):
        Digest.parse(reference)
    else:
        check_tag(reference)
    return reference


def check_name(name: str) -> str:
    """Return `name` if it is a valid repository name, else raise NAME_INVALID."""
    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.fullmatch(name):
        raise NameInvalid(f"invalid repository name {name[:80]!r}")
    return name


def check_name_at(host: str, name: str) -> str:
    """Return `name` if `host/name` fits MAX_NAME_LENGTH, else raise NAME_INVALID.

    The distribution spec notes that many clients limit host[:port] + "/" + name to 255
    characters; distribution's registry answers 500 to a name that alone is longer. The
    clients' limit is the stricter, so a name within it is one every upstream can take.
    """
    length = len(host) + 1 + len(name)
    if length > MAX_NAME_LENGTH:
        raise NameInvalid(
            f"repository name {name[:80]!r} is too long: with its registry host it has "
            f"{length} characters, more than {MAX_NAME_LENGTH}"
        )
    return name


def check_prefix(prefix: str) -> str:
    """Return `prefix` if it can name an upstream (a registry host[:port]), else raise
    NAME_INVALID."""
    if not REGISTRY_HOST_RE.fullmatch(prefix):
        raise NameInvalid(f"invalid upstream prefix {prefix[:80]!r}")
    return prefix


def check_tag(tag: str) -> str:
    if not _TAG_RE.fullmatch(tag):
        raise TagInvalid(f"invalid tag {tag[:80]!r}")
    return tag


@dataclass(frozen=True, slots=True)
class Repository:
    """A repository of one upstream: `prefix` names the upstream, `name` is its path there."""

    prefix: str
    name: str

    def __str__(self) -> str:
        return f"{self.prefix}/{self.name}"


@dataclass(frozen=True, slots=True)
class ImageRef:
    """`[prefix/]name[:tag|@digest]`, as a user writes it and a pull addresses it."""

    path: str  # the name as routed by the proxy: may start with an upstream prefix
    reference: str

    @classmethod
    def parse(cls, text: str) -> "ImageRef":
        text = text.strip()
        if "@" in text:
            path, _, reference = text.partition("@")
            return cls(path, reference)
        last = text.rsplit("/", 1)[-1]
        if ":" in last:
            path, _, tag = text.rpartition(":")
            return cls(path, tag)
        return cls(text, DEFAULT_TAG)
