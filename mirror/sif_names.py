"""Names of converted SIF images: which repository of the store holds the SIF of which
source image, for which platform.

The SIF of `docker.io/library/alpine` for `[sif] platform` is the repository
`<namespace>/docker.io/library/alpine` (prefix: the namespace; path: the source's canonical
name). Every other platform has a prefix of its own, `<namespace>-<os>-<arch>[-<variant>]`
(`sif-linux-arm64`, `sif-linux-arm-v7`): one path component of the distribution grammar,
which an upstream prefix cannot take (config checks it), so no name means two things.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mirror.reference import PLATFORM_RE, Repository

_SOURCE_DIGEST_TAG = re.compile(r"sha256-([a-f0-9]{64})")


@dataclass(frozen=True, slots=True)
class SifNames:
    namespace: str  # `[sif] namespace`
    default_platform: str  # `[sif] platform`

    def prefix_for(self, platform: str) -> str:
        """The prefix of the SIF repositories converted for `platform`."""
        if platform == self.default_platform:
            return self.namespace
        return f"{self.namespace}-{platform.replace('/', '-')}"

    def platform_of(self, prefix: str) -> str | None:
        """The platform a SIF prefix converts for; None for any other prefix."""
        if prefix == self.namespace:
            return self.default_platform
        head = f"{self.namespace}-"
        if not prefix.startswith(head):
            return None
        platform = prefix[len(head) :].replace("-", "/")
        return platform if PLATFORM_RE.fullmatch(platform) else None

    def is_sif(self, repo: Repository) -> bool:
        return self.platform_of(repo.prefix) is not None

    def converted(self, source: Repository, platform: str) -> Repository:
        """The repository holding the SIFs of `source` for `platform`."""
        return Repository(self.prefix_for(platform), str(source))

    def source_of(self, repo: Repository) -> Repository:
        """The image repository a SIF repository is converted from; any other repository
        is its own source (so the access policy of the source decides for both)."""
        if not self.is_sif(repo):
            return repo
        prefix, _, name = repo.name.partition("/")
        return Repository(prefix, name)


def source_digest_tag(tag: str) -> str | None:
    """`sha256:<hex>` for the tag `sha256-<hex>`, which in the SIF namespace names the
    source image by its digest (an immutable tag); None for any other tag."""
    match = _SOURCE_DIGEST_TAG.fullmatch(tag)
    return f"sha256:{match.group(1)}" if match else None


def platform_label(platform: str) -> str:
    """`linux-arm64` for `linux/arm64`: how file names spell a platform."""
    return platform.replace("/", "-")
