"""Who may pull what: each upstream's `access`, refined per repository by its `[[rules]]`.

The policy is pure: it knows nothing of HTTP, tokens or password sources. A repository is
named as the proxy routes it (`Repository`: the upstream's prefix and the path there).
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from mirror.access.identity import Identity
from mirror.config import Access, AccessRule, UpstreamConfig
from mirror.reference import Repository


class AccessPolicy:
    def __init__(self, upstreams: Iterable[UpstreamConfig]) -> None:
        self._by_prefix = {u.prefix: u for u in upstreams}

    @property
    def protects_anything(self) -> bool:
        """Some repository is closed to anonymous pulls."""
        return any(
            rule.access is not Access.ANONYMOUS
            for upstream in self._by_prefix.values()
            for rule in (upstream.access, *upstream.rules)
        )

    def rule_for(self, repo: Repository) -> AccessRule:
        """The first `[[rules]]` entry whose pattern matches the repository's path, else
        the upstream's own access. An unknown prefix is treated as restricted to nobody:
        the router never produces one, so it can only be a mistake."""
        upstream = self._by_prefix.get(repo.prefix)
        if upstream is None:
            return _NOBODY
        for rule in upstream.rules:
            if any(fnmatchcase(repo.name, pattern) for pattern in rule.repositories):
                return rule
        return upstream.access

    def is_public(self, repo: Repository) -> bool:
        return self.rule_for(repo).access is Access.ANONYMOUS

    def may_pull(self, identity: Identity, repo: Repository) -> bool:
        rule = self.rule_for(repo)
        if rule.access is Access.ANONYMOUS:
            return True
        if identity.anonymous:
            return False
        if rule.access is Access.AUTHENTICATED:
            return True
        return identity.user in rule.users or not rule.groups.isdisjoint(identity.groups)


_NOBODY = AccessRule(Access.RESTRICTED)
