"""Which upstream and repository a client's path names."""

from __future__ import annotations

from mirror.config import Config, UpstreamConfig
from mirror.errors import NameInvalid, NameUnknown
from mirror.reference import Repository, check_name, check_name_at


class Router:
    def __init__(self, config: Config) -> None:
        self.by_prefix = {u.prefix: u for u in config.upstreams}
        self._by_host = {u.host: u for u in config.upstreams}
        self._default = config.default_upstream
        self.sif_names = config.sif.names
        self._local = config.local
        self.local_prefix = config.local.prefix  # "" while [local] is off

    def route(self, path_name: str, ns: str | None = None) -> Repository:
        """Map a client's repository path to (upstream, upstream repository name).

        Order: containerd's ?ns=, then a first component naming the SIF namespace (the
        rest is routed as the source image), then `[local] prefix` (the site's own
        images, never sent upstream), then one naming a configured prefix, then the
        default upstream. The name is checked against the grammar before it is used,
        and its upstream form (after the library rule) against the length limit.
        """
        if ns:
            upstream = self.by_prefix.get(ns) or self._by_host.get(ns)
            if upstream is None:
                raise NameUnknown(f"no upstream is configured for registry {ns[:100]!r}")
            return self._repository(upstream, path_name)
        first, slash, rest = path_name.partition("/")
        platform = self.sif_names.platform_of(first) if slash else None
        if platform is not None:
            return self.sif_names.converted(self._upstream_route(rest), platform)
        return self._upstream_route(path_name)

    def source_of(self, repo: Repository) -> Repository:
        """The repository whose access policy applies to `repo`: the image a SIF repository
        is converted from, else `repo` itself."""
        return self.sif_names.source_of(repo)

    def is_local(self, repo: Repository) -> bool:
        """`repo` is in the local namespace: pushed here, never fetched from upstream."""
        return self._local.is_local(repo)

    def _upstream_route(self, path_name: str) -> Repository:
        first, slash, rest = path_name.partition("/")
        if self.local_prefix and first == self.local_prefix:
            return self._local_repository(rest)
        if slash and first in self.by_prefix:
            return self._repository(self.by_prefix[first], rest)
        upstream = self._default
        if upstream is None:
            check_name(path_name)
            raise NameUnknown(
                f"{path_name!r} names no configured upstream prefix, and no upstream is the default"
            )
        return self._repository(upstream, path_name)

    def _local_repository(self, name: str) -> Repository:
        """`<namespace>/<name...>` under the local prefix: the namespace (a user or a
        group) says who may write, so a name without one is refused."""
        check_name(f"{self.local_prefix}/{name}" if name else "")
        if "/" not in name:
            raise NameInvalid(
                f"local repositories are named {self.local_prefix}/<user or group>/<name>, "
                f"got {self.local_prefix}/{name}"
            )
        return Repository(self.local_prefix, name)

    @staticmethod
    def _repository(upstream: UpstreamConfig, name: str) -> Repository:
        check_name(name)
        if upstream.library_namespace and "/" not in name:
            name = f"{upstream.library_namespace}/{name}"
        check_name_at(upstream.host, name)
        return Repository(upstream.prefix, name)
