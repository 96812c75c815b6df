"""Who may pull what: each upstream's `access`, refined per repository by its `[[rules]]`;
and who may write to the local namespace (`[local]`).

The policy is pure: it knows nothing of HTTP, tokens or password sources. A repository is
named as the proxy routes it (`Repository`: the upstream's prefix and the path there).
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from mirror.access.identity import Identity
from mirror.config import Access, AccessRule, LocalConfig, UpstreamConfig
from mirror.reference import Repository


class AccessPolicy:
    def __init__(
        self, upstreams: Iterable[UpstreamConfig], local: LocalConfig | None = None
    ) -> None:
        self._by_prefix = {u.prefix: u for u in upstreams}
        self._local = local or _NO_LOCAL

    @property
    def protects_anything(self) -> bool:
        """Some repository is closed to anonymous pulls."""
        return any(
            rule.access is not Access.ANONYMOUS
            for upstream in self._by_prefix.values()
            for rule in (upstream.access, *upstream.rules)
        ) or (self._local.enabled and self._local.access.access is not Access.ANONYMOUS)

    def rule_for(self, repo: Repository) -> AccessRule:
        """The first `[[rules]]` entry whose pattern matches the repository's path, else
        the upstream's own access. An unknown prefix is treated as restricted to nobody:
        the router never produces one, so it can only be a mistake."""
        if self._local.is_local(repo):
            return self._local.access
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
        """The rule's answer; in the local namespace, whoever may write may also read."""
        rule = self.rule_for(repo)
        if rule.access is Access.ANONYMOUS:
            return True
        if identity.anonymous:
            return False
        if rule.access is Access.AUTHENTICATED:
            return True
        allowed = identity.user in rule.users or not rule.groups.isdisjoint(identity.groups)
        return allowed or self.may_push(identity, repo)

    def may_push(self, identity: Identity, repo: Repository) -> bool:
        """Writes (pushes, deletes) are for the local namespace only: `<prefix>/<user>/...`
        by that user, `<prefix>/<group>/...` by the group's members, anything by
        `[local] admins`."""
        if not self._local.is_local(repo) or identity.anonymous or identity.user is None:
            return False
        if identity.user in self._local.admins:
            return True
        owner = self._local.owner_of(repo)
        return owner == identity.user or owner in identity.groups


_NOBODY = AccessRule(Access.RESTRICTED)
_NO_LOCAL = LocalConfig()
