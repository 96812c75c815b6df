"""Typed, frozen configuration loaded from TOML.

Every default lives in `config.toml` at the project root (embedded in the package as
`default-config.toml`); a user's file is merged over it key by key. Loading collects every
problem in the file and raises one `ConfigError` listing them all, each naming the key.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import logging
import math
import os
import ssl
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from mirror.errors import ConfigError, InvalidValue, MirrorError, NameInvalid
from mirror.reference import (
    PLATFORM_RE,
    REGISTRY_HOST_RE,
    ImageRef,
    Repository,
    check_name,
    check_prefix,
    check_reference,
)
from mirror.sif_names import SifNames
from mirror.units import parse_size

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str
    port: int
    shutdown_grace_seconds: float  # on SIGTERM, how long responses in flight may take
    tls_cert: Path | None = None  # PEM, full chain: the listener speaks TLS 1.2+ only
    tls_key: Path | None = None
    metrics_port: int = 0  # /metrics on a listener of its own; 0 = on the main port

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


@dataclass(frozen=True, slots=True)
class LogConfig:
    """`[log]`: the access log, one line per request."""

    access: str  # "-": standard output; "": off; else the file's absolute path
    format: str  # "text" or "json"

    @property
    def access_file(self) -> Path | None:
        return Path(self.access) if self.access not in ("", "-") else None


@dataclass(frozen=True, slots=True)
class CacheConfig:
    root: Path
    index_dir: Path
    tag_ttl_seconds: float
    max_stale_seconds: float  # longest a cached tag stands in for a failing upstream
    manifest_memory_mib: int
    sif_tree: Path | None  # where verified SIFs also appear as <prefix>/<repo>/<tag>.sif
    pins: tuple[str, ...]  # images `mirror gc` never evicts
    fill_stale_seconds: float  # a shared fill untouched this long lost its instance


@dataclass(frozen=True, slots=True)
class ClientConfig:
    connect_timeout_seconds: float
    read_timeout_seconds: float
    retries: int
    max_retry_wait_seconds: float
    breaker_failures: int  # consecutive failed requests that open an upstream's breaker
    breaker_cooldown_seconds: float  # how long an open breaker fails requests at once


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    mirror_url: str  # host[:port] users pull from, shown in every command of the catalog
    title: str
    out: Path
    serve: bool  # publish the rendered site at / from `mirror serve`
    https: bool = False  # users reach the mirror over HTTPS: commands shown carry no insecure flag
    include_restricted: bool = False  # list repositories not open to anonymous pulls


class Access(enum.Enum):
    """Who may pull from an upstream, or from the repositories a rule matches."""

    ANONYMOUS = "anonymous"  # anyone who reaches the port
    AUTHENTICATED = "authenticated"  # anyone with valid credentials
    RESTRICTED = "restricted"  # the rule's users and members of its groups


@dataclass(frozen=True, slots=True)
class AccessRule:
    """`access` (+ `users`, `groups`) of an upstream, or one of its `[[rules]]`: then
    `repositories` holds its fnmatch patterns over the repository path in the upstream."""

    access: Access = Access.ANONYMOUS
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    repositories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LdapConfig:
    """`[auth.ldap]`: users bind as themselves, found by `user_dn_template` or by a search
    (`search_base` + `search_filter`, as `bind_dn` or anonymously); groups by a search."""

    url: str  # ldap://host[:port] (with start_tls) or ldaps://host[:port]
    start_tls: bool
    user_dn_template: str  # "uid={user},ou=people,dc=example,dc=org"
    search_base: str
    search_filter: str  # "(uid={user})"
    bind_dn: str  # who searches; "" = anonymous
    bind_password: str = field(repr=False)
    group_base: str
    group_filter: str  # "(memberUid={user})" or "(member={dn})"
    group_attribute: str  # the attribute of a group entry that names it
    ca_file: Path | None
    timeout_seconds: float
    cache_seconds: float  # how long a verified login and its groups are reused
    bind_password_source: SecretSource | None = None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    htpasswd: Path | None = None
    groups_file: Path | None = None
    ldap: LdapConfig | None = None
    token_ttl_seconds: float = 300.0
    realm: str = ""  # the token URL in challenges; "" = from the request's scheme and Host

    @property
    def enabled(self) -> bool:
        """Clients can say who they are: the mirror then challenges and issues tokens."""
        return self.htpasswd is not None or self.ldap is not None


class SecretUnreadable(Exception):
    """A secret's environment variable or file gives no usable value (the message says why)."""


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where a secret is read from: `key` is `<secret>_env` (then `value` names the variable)
    or `<secret>_file` (then `value` is the file's absolute path). Kept so that SIGHUP can
    read a rotated password again."""

    key: str
    value: str

    def read(self) -> str:
        """The secret as it is now; `SecretUnreadable` when it is unset, empty or unreadable."""
        if self.key.endswith("_env"):
            if not os.environ.get(self.value):
                state = "is empty" if self.value in os.environ else "is not set"
                raise SecretUnreadable(f"environment variable {self.value!r} {state}")
            return os.environ[self.value]
        try:
            secret = Path(self.value).read_text().strip()
        except OSError as exc:
            raise SecretUnreadable(f"cannot read {self.value}: {exc.strerror}") from None
        if not secret:
            # An empty password would be accepted here and refused by the upstream on
            # every request: a 403 for each pull instead of one error.
            raise SecretUnreadable(f"{self.value} is empty")
        return secret

    def reread(self, current: str, what: str) -> tuple[str, str]:
        """SIGHUP: the secret to use from now on and what happened: "changed", "unchanged",
        or "kept: see the error above" when it cannot be read (logged at ERROR naming
        `what` and the key, never a secret)."""
        try:
            secret = self.read()
        except SecretUnreadable as exc:
            log.error("%s not reloaded, still using the previous one: %s: %s", what, self.key, exc)
            return current, "kept: see the error above"
        return secret, "unchanged" if secret == current else "changed"


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    url: str
    prefix: str
    default: bool
    library_namespace: str
    offline: bool  # mode = "offline": never connect, serve only what is cached
    username: str
    password: str = field(repr=False)
    ca_file: Path | None = None  # PEM bundle trusted for this upstream besides the system's
    access: AccessRule = AccessRule()  # the upstream's own; `repositories` is empty
    rules: tuple[AccessRule, ...] = ()  # per repository: the first that matches wins
    password_source: SecretSource | None = None  # where `password` came from; SIGHUP rereads it

    @property
    def host(self) -> str:
        """host[:port] of the upstream, as containerd's `?ns=` names it."""
        return urlsplit(self.url).netloc


SIF_COMPRESSIONS = ("gzip", "zstd", "xz")


@dataclass(frozen=True, slots=True)
class SifConfig:
    """`[sif]`: OCI images converted to SIF files on the mirror."""

    namespace: str  # first path component of the SIF route: /v2/<namespace>/<image>
    platform: str  # os/architecture[/variant] converted from a multi-platform image
    compression: str  # of the squashfs: one of SIF_COMPRESSIONS
    max_wait_seconds: float  # a pull waits this long for a conversion, then gets 503
    max_parallel: int  # conversions at once on one instance
    max_rootfs_bytes: int  # most uncompressed layer bytes one conversion reads

    @property
    def names(self) -> SifNames:
        """How the repositories of converted images are named."""
        return SifNames(self.namespace, self.platform)


@dataclass(frozen=True, slots=True)
class LocalConfig:
    """`[local]`: the site's own namespace, which takes authenticated pushes (README, "The
    site's own registry"). Its repositories are `<prefix>/<namespace>/<name>`, where the
    namespace is a user (who may write there) or a group (whose members may)."""

    prefix: str = ""  # first path component of local repositories; "" = off
    admins: frozenset[str] = frozenset()  # users who may write in every namespace
    access: AccessRule = AccessRule()  # who may pull local images (writers always may)
    quota: int | None = None  # most bytes one namespace may hold; None = no limit
    upload_ttl_hours: float = 24.0  # `mirror gc` removes uploads untouched this long

    @property
    def enabled(self) -> bool:
        return bool(self.prefix)

    def is_local(self, repo: Repository) -> bool:
        return self.enabled and repo.prefix == self.prefix

    @staticmethod
    def owner_of(repo: Repository) -> str:
        """The user or group whose namespace a local repository is in: the first component
        of its name (the router refuses a local name without one)."""
        return repo.name.partition("/")[0]

    def namespace_of(self, repo: Repository) -> str | None:
        """`<prefix>/<user or group>` of a local repository; None for any other."""
        return f"{self.prefix}/{self.owner_of(repo)}" if self.is_local(repo) else None


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    server: ServerConfig
    cache: CacheConfig
    client: ClientConfig
    upstreams: tuple[UpstreamConfig, ...]
    catalog: CatalogConfig
    log: LogConfig
    sif: SifConfig
    auth: AuthConfig = AuthConfig()
    local: LocalConfig = LocalConfig()

    @property
    def default_upstream(self) -> UpstreamConfig | None:
        return next((u for u in self.upstreams if u.default), None)


def default_config_text() -> str:
    return resources.files("mirror").joinpath("default-config.toml").read_text()


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load the embedded defaults, merge the file at `path` (if any) and `overrides` over it."""
    defaults = tomllib.loads(default_config_text())
    source = "<embedded config.toml>"
    data = defaults
    if path is not None:
        source = str(path)
        try:
            user = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(source, ["file not found"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, [f"cannot read: {exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
        data = _merge(defaults, user)
    if overrides:
        data = _merge(data, overrides)
    return _Parser(source, data, base_dir=Path(path).parent if path else Path.cwd()).parse()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Merge tables key by key; `upstreams` in a user file replaces the default set whole,
    so a site that lists its own upstreams gets exactly those."""
    merged = dict(base)
    for key, value in over.items():
        if key != "upstreams" and isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value)
        else:
            merged[key] = value
    return merged


# Keys an `[upstreams.<name>]` table may leave out, and their values then. Every key of
# the fixed tables ([server], [cache], [client], [catalog]) takes its default from
# config.toml alone, which is also where the known keys of those tables are listed.
_UPSTREAM_OPTIONAL: dict[str, Any] = {
    "default": False,
    "library_namespace": "",
    "mode": "online",
    "username": "",
    "ca_file": "",
    "access": "anonymous",
    "users": [],
    "groups": [],
    "rules": [],
}
_UPSTREAM_KEYS = {"url", "prefix", "password_env", "password_file", "password", *_UPSTREAM_OPTIONAL}
_RULE_KEYS = {"repositories", "access", "users", "groups"}
# `[auth.ldap]` is optional as a whole: its keys and their values when left out.
_LDAP_OPTIONAL: dict[str, Any] = {
    "start_tls": False,
    "user_dn_template": "",
    "search_base": "",
    "search_filter": "",
    "bind_dn": "",
    "group_base": "",
    "group_filter": "",
    "group_attribute": "cn",
    "ca_file": "",
    "timeout_seconds": 5,
    "cache_seconds": 60,
}
_LDAP_KEYS = {"url", "bind_password_env", "bind_password_file", *_LDAP_OPTIONAL}
_FIXED_TABLES = ("server", "cache", "client", "catalog", "log", "auth", "sif", "local")


class _Parser:
    """Reads the merged TOML data into the typed config, recording every problem."""

    def __init__(self, source: str, data: dict[str, Any], base_dir: Path) -> None:
        self.source = source
        self.data = data
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.known = tomllib.loads(default_config_text())

    def parse(self) -> Config:
        for key in self.data:
            if key not in (*_FIXED_TABLES, "upstreams"):
                self.problems.append(f"[{key}]: unknown table")
        server = self._server()
        cache = self._cache()
        client = self._client()
        auth = self._auth()
        upstreams = self._upstreams(auth)
        catalog = self._catalog(server)
        log = self._log()
        sif = self._sif()
        self._check_sif_names(sif, upstreams)
        local = self._local(auth, sif, upstreams)
        self._check_local_pins(cache.pins, local.prefix)
        if self.problems:
            raise ConfigError(self.source, self.problems)
        return Config(self.source, server, cache, client, upstreams, catalog, log, sif, auth, local)

    def _table(self, name: str, *subtables: str) -> dict[str, Any]:
        """A fixed table, its unknown keys reported; every known key is present, because
        the site's file was merged over config.toml. `subtables` are optional tables
        inside it, read by their own methods."""
        table = self.data.get(name, {})
        if not isinstance(table, dict):
            self.problems.append(f"[{name}]: must be a table")
            return dict(self.known[name])
        self._unknown_keys(table, name, {*self.known[name], *subtables})
        return table

    def _get(
        self, table: dict[str, Any], where: str, key: str, kind: type | tuple[type, ...]
    ) -> Any:
        """`table[key]` if it has the right type; else a problem is recorded and the value
        from config.toml (or an upstream's optional default) stands in."""
        fallback = self.known.get(where, _optional_keys(where)).get(key)
        if key not in table and fallback is None:
            self.problems.append(f"{where}.{key}: missing")
            return _empty(kind)
        value = table.get(key, fallback)
        # bool is an int in Python; a port of `true` is still wrong.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            names = " or ".join(t.__name__ for t in _as_tuple(kind))
            self.problems.append(f"{where}.{key}: must be {names}, got {value!r}")
            return fallback if fallback is not None else _empty(kind)
        return value

    def _unknown_keys(self, table: dict[str, Any], where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                self.problems.append(f"{where}.{key}: unknown key")

    def _server(self) -> ServerConfig:
        table = self._table("server")
        host = self._get(table, "server", "host", str)
        port = self._get(table, "server", "port", int)
        if not 0 < port < 65536:
            self.problems.append(f"server.port: must be 1-65535, got {port}")
        metrics_port = self._get(table, "server", "metrics_port", int)
        if not 0 <= metrics_port < 65536:
            self.problems.append(
                f"server.metrics_port: must be 1-65535, or 0 for the main port, got {metrics_port}"
            )
        elif metrics_port == port:
            self.problems.append(
                f"server.metrics_port: {metrics_port} is server.port; use 0 to serve /metrics there"
            )
        if host not in ("localhost",) and not _is_ip(host) and not REGISTRY_HOST_RE.fullmatch(host):
            self.problems.append(f"server.host: not an address or host name: {host!r}")
        cert = self._path(table, "server", "tls_cert")
        key = self._path(table, "server", "tls_key")
        if (cert is None) != (key is None):
            self.problems.append("server.tls_cert, server.tls_key: set both or neither")
        elif cert is not None and key is not None:
            self._check_key_pair(cert, key)
        grace = self._number(table, "server", "shutdown_grace_seconds", minimum=0)
        return ServerConfig(host, port, grace, cert, key, metrics_port)

    def _check_key_pair(self, cert: Path, key: Path) -> None:
        """Loaded now, so a wrong path or a key of another certificate fails at start."""
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            self.problems.append(
                f"server.tls_cert, server.tls_key: {cert} and {key} are not a PEM "
                f"certificate chain and its private key ({exc.reason or exc})"
            )
        except OSError as exc:
            self.problems.append(
                f"server.tls_cert, server.tls_key: cannot read {exc.filename}: {exc.strerror}"
            )

    def _cache(self) -> CacheConfig:
        table = self._table("cache")
        root = self._required_path(table, "cache", "root")
        index_dir = self._path(table, "cache", "index_dir") or _default_index_dir(root)
        ttl = self._number(table, "cache", "tag_ttl_seconds", minimum=0)
        stale = self._number(table, "cache", "max_stale_seconds", minimum=0)
        memory = self._get(table, "cache", "manifest_memory_mib", int)
        if memory < 0:
            self.problems.append("cache.manifest_memory_mib: must be >= 0")
        pins = [pin for pin in self._get(table, "cache", "pins", list) if self._pin_ok(pin)]
        fill_stale = self._number(table, "cache", "fill_stale_seconds", minimum=0, inclusive=False)
        return CacheConfig(
            root,
            index_dir,
            ttl,
            stale,
            memory,
            self._path(table, "cache", "sif_tree"),
            tuple(pins),
            fill_stale,
        )

    def _pin_ok(self, pin: Any) -> bool:
        """A pin is an image name as pulled through the mirror: checked by the grammar here;
        which upstream it names is resolved when `mirror gc` runs."""
        if not isinstance(pin, str) or not pin:
            self.problems.append(f"cache.pins: {pin!r} is not an image name")
            return False
        ref = ImageRef.parse(pin)
        first, slash, rest = ref.path.partition("/")
        try:
            if slash and ("." in first or ":" in first):
                check_prefix(first)
                check_name(rest)
            else:
                check_name(ref.path)
            check_reference(ref.reference)
        except MirrorError as exc:
            self.problems.append(f"cache.pins: {pin!r}: {exc.message}")
            return False
        return True

    def _number(
        self, table: dict[str, Any], where: str, key: str, *, minimum: float, inclusive: bool = True
    ) -> float:
        value = float(self._get(table, where, key, (int, float)))
        if not math.isfinite(value):
            self.problems.append(f"{where}.{key}: must be a finite number, got {value}")
            return minimum
        if value < minimum or (not inclusive and value == minimum):
            self.problems.append(f"{where}.{key}: must be {'>=' if inclusive else '>'} {minimum:g}")
        return value

    def _client(self) -> ClientConfig:
        table = self._table("client")
        return ClientConfig(
            connect_timeout_seconds=self._number(
                table, "client", "connect_timeout_seconds", minimum=0, inclusive=False
            ),
            read_timeout_seconds=self._number(
                table, "client", "read_timeout_seconds", minimum=0, inclusive=False
            ),
            retries=self._count(table, "client", "retries"),
            max_retry_wait_seconds=self._number(
                table, "client", "max_retry_wait_seconds", minimum=0
            ),
            breaker_failures=self._count(table, "client", "breaker_failures"),
            breaker_cooldown_seconds=self._number(
                table, "client", "breaker_cooldown_seconds", minimum=0
            ),
        )

    def _count(self, table: dict[str, Any], where: str, key: str) -> int:
        value: int = self._get(table, where, key, int)
        if value < 0:
            self.problems.append(f"{where}.{key}: must be >= 0")
        return value

    def _catalog(self, server: ServerConfig) -> CatalogConfig:
        table = self._table("catalog")
        mirror_url = self._get(table, "catalog", "mirror_url", str)
        if "://" in mirror_url or mirror_url.endswith("/"):
            self.problems.append(
                "catalog.mirror_url: give host[:port][/path] without a "
                f"scheme or trailing slash, got {mirror_url!r}"
            )
        tls = self._get(table, "catalog", "tls", str)
        if tls not in ("auto", "on", "off"):
            self.problems.append(f'catalog.tls: must be "auto", "on" or "off", got {tls!r}')
        return CatalogConfig(
            mirror_url=mirror_url or f"{server.host}:{server.port}",
            title=self._get(table, "catalog", "title", str),
            out=self._required_path(table, "catalog", "out"),
            serve=self._get(table, "catalog", "serve", bool),
            https=tls == "on" or (tls == "auto" and server.tls),
            include_restricted=self._get(table, "catalog", "include_restricted", bool),
        )

    def _log(self) -> LogConfig:
        table = self._table("log")
        access = self._get(table, "log", "access", str)
        access_format = self._get(table, "log", "format", str)
        if access_format not in ("text", "json"):
            self.problems.append(f'log.format: must be "text" or "json", got {access_format!r}')
        if access not in ("", "-"):
            access = str(self._path(table, "log", "access") or "")
        return LogConfig(access, access_format)

    def _sif(self) -> SifConfig:
        table = self._table("sif")
        namespace = self._get(table, "sif", "namespace", str)
        self._one_component("sif.namespace", namespace)
        platform = self._get(table, "sif", "platform", str)
        if not PLATFORM_RE.fullmatch(platform):
            self.problems.append(
                "sif.platform: must be os/architecture[/variant] like linux/amd64, "
                f"got {platform!r}"
            )
        compression = self._get(table, "sif", "compression", str)
        if compression not in SIF_COMPRESSIONS:
            choices = ", ".join(f'"{c}"' for c in SIF_COMPRESSIONS)
            self.problems.append(f"sif.compression: must be one of {choices}, got {compression!r}")
        max_parallel = self._get(table, "sif", "max_parallel", int)
        if max_parallel < 1:
            self.problems.append("sif.max_parallel: must be >= 1")
        return SifConfig(
            namespace=namespace,
            platform=platform,
            compression=compression,
            max_wait_seconds=self._number(table, "sif", "max_wait_seconds", minimum=0),
            max_parallel=max_parallel,
            max_rootfs_bytes=self._size(table, "sif", "max_rootfs_bytes"),
        )

    def _check_sif_names(self, sif: SifConfig, upstreams: tuple[UpstreamConfig, ...]) -> None:
        """An upstream prefix must not be a name of the SIF namespace (README, "Pulling
        converted images"), or one path would name two repositories."""
        for upstream in upstreams:
            if sif.names.platform_of(upstream.prefix) is not None:
                self.problems.append(
                    f"upstreams.{upstream.name}.prefix: {upstream.prefix!r} is a name of the "
                    f"SIF namespace (sif.namespace = {sif.namespace!r}); choose another"
                )

    def _local(
        self, auth: AuthConfig, sif: SifConfig, upstreams: tuple[UpstreamConfig, ...]
    ) -> LocalConfig:
        table = self._table("local")
        prefix = self._get(table, "local", "prefix", str)
        if prefix:
            self._check_local_prefix(prefix, sif, upstreams)
            if not auth.enabled:
                self.problems.append(
                    "local.prefix: pushes need to know who pushes: "
                    "set [auth] htpasswd or [auth.ldap]"
                )
        admins = self._names(table, "local", "admins")
        access = self._access_rule(table, "local", auth, rule=False)
        quota_text = self._get(table, "local", "quota", (int, str))
        quota = None if quota_text in ("", 0) else self._size(table, "local", "quota")
        ttl = self._number(table, "local", "upload_ttl_hours", minimum=0, inclusive=False)
        return LocalConfig(prefix, frozenset(admins), access, quota, ttl)

    def _check_local_pins(self, pins: tuple[str, ...], prefix: str) -> None:
        """A pin of a local image names its namespace, as every local repository does."""
        for pin in pins:
            first, _, rest = ImageRef.parse(pin).path.partition("/")
            if prefix and first == prefix and "/" not in rest:
                self.problems.append(
                    f"cache.pins: {pin!r}: local repositories are named "
                    f"{prefix}/<user or group>/<name>"
                )

    def _one_component(self, key: str, value: str) -> bool:
        """`value` is one component of a repository name (a first path component the
        router matches whole); else a problem naming `key` is recorded."""
        try:
            check_name(value)
            if "/" in value:
                raise NameInvalid("one path component")
        except MirrorError as exc:
            self.problems.append(
                f"{key}: {value!r} is not a repository name component ({exc.message})"
            )
            return False
        return True

    def _check_local_prefix(
        self, prefix: str, sif: SifConfig, upstreams: tuple[UpstreamConfig, ...]
    ) -> None:
        """One name component that no upstream prefix or SIF namespace name also is, so
        one path names one repository."""
        if not self._one_component("local.prefix", prefix):
            return
        if sif.names.platform_of(prefix) is not None:
            self.problems.append(
                f"local.prefix: {prefix!r} is a name of the SIF namespace "
                f"(sif.namespace = {sif.namespace!r}); choose another"
            )
        for upstream in upstreams:
            if upstream.prefix == prefix:
                self.problems.append(
                    f"local.prefix: {prefix!r} is also upstreams.{upstream.name}.prefix; "
                    "choose another"
                )

    def _size(self, table: dict[str, Any], where: str, key: str) -> int:
        """A byte count written as a number or as a size text ("64G", "1.5TiB")."""
        value = self._get(table, where, key, (int, str))
        try:
            size = parse_size(value) if isinstance(value, str) else value
        except InvalidValue as exc:
            self.problems.append(f"{where}.{key}: {exc}")
            return 1
        if size < 1:
            self.problems.append(f"{where}.{key}: must be at least 1 byte")
        return size

    def _auth(self) -> AuthConfig:
        table = self._table("auth", "ldap")
        realm = self._get(table, "auth", "realm", str)
        if realm and not _is_http_url(realm):
            self.problems.append(f"auth.realm: must be an http(s):// URL, got {realm!r}")
        return AuthConfig(
            htpasswd=self._path(table, "auth", "htpasswd"),
            groups_file=self._path(table, "auth", "groups_file"),
            ldap=self._ldap(table.get("ldap")),
            token_ttl_seconds=self._number(
                table, "auth", "token_ttl_seconds", minimum=0, inclusive=False
            ),
            realm=realm,
        )

    def _ldap(self, table: Any) -> LdapConfig | None:
        where = "auth.ldap"
        if table is None:
            return None
        if not isinstance(table, dict):
            self.problems.append(f"[{where}]: must be a table")
            return None
        self._unknown_keys(table, where, _LDAP_KEYS)
        url = self._get(table, where, "url", str)
        parts = _split_url(url)
        scheme = parts.scheme if parts is not None else ""
        if url and (scheme not in ("ldap", "ldaps") or parts is None or not parts.hostname):
            self.problems.append(f"{where}.url: must be ldap://host[:port] or ldaps://host[:port]")
        start_tls = self._get(table, where, "start_tls", bool)
        if start_tls and scheme == "ldaps":
            self.problems.append(f"{where}.start_tls: ldaps:// is TLS already; use one of them")
        template = self._get(table, where, "user_dn_template", str)
        search_base = self._get(table, where, "search_base", str)
        search_filter = self._get(table, where, "search_filter", str)
        if bool(template) == bool(search_base or search_filter):
            self.problems.append(
                f"{where}: set user_dn_template, or search_base and search_filter (one way)"
            )
        elif not template and not (search_base and search_filter):
            self.problems.append(f"{where}: search_base and search_filter go together")
        for key, value in (("user_dn_template", template), ("search_filter", search_filter)):
            if value and "{user}" not in value:
                self.problems.append(f"{where}.{key}: must contain {{user}}")
        group_base = self._get(table, where, "group_base", str)
        group_filter = self._get(table, where, "group_filter", str)
        if bool(group_base) != bool(group_filter):
            self.problems.append(f"{where}: group_base and group_filter go together")
        bind_dn = self._get(table, where, "bind_dn", str)
        bind_password, bind_password_source = self._password(table, where, "bind_password")
        if bind_password and not bind_dn:
            self.problems.append(f"{where}.bind_dn: required when a bind password is configured")
        return LdapConfig(
            url=url,
            start_tls=start_tls,
            user_dn_template=template,
            search_base=search_base,
            search_filter=search_filter,
            bind_dn=bind_dn,
            bind_password=bind_password,
            group_base=group_base,
            group_filter=group_filter,
            group_attribute=self._get(table, where, "group_attribute", str),
            ca_file=self._ca_file(table, where),
            timeout_seconds=self._number(
                table, where, "timeout_seconds", minimum=0, inclusive=False
            ),
            cache_seconds=self._number(table, where, "cache_seconds", minimum=0),
            bind_password_source=bind_password_source,
        )

    def _upstreams(self, auth: AuthConfig) -> tuple[UpstreamConfig, ...]:
        table = self.data.get("upstreams", {})
        if not isinstance(table, dict):
            self.problems.append("[upstreams]: must be a table")
            table = {}
        upstreams = [self._upstream(name, entry, auth) for name, entry in table.items()]
        found = [u for u in upstreams if u is not None]
        defaults = [u.name for u in found if u.default]
        if len(defaults) > 1:
            self.problems.append(f"upstreams: more than one has default = true: {defaults}")
        seen: dict[str, str] = {}
        for upstream in found:
            if upstream.prefix in seen:
                self.problems.append(
                    f"upstreams.{upstream.name}.prefix: {upstream.prefix!r} "
                    f"is also the prefix of upstreams.{seen[upstream.prefix]}"
                )
            seen[upstream.prefix] = upstream.name
        return tuple(found)

    def _upstream(self, name: str, entry: Any, auth: AuthConfig) -> UpstreamConfig | None:
        where = f"upstreams.{name}"
        if not isinstance(entry, dict):
            self.problems.append(f"{where}: must be a table")
            return None
        self._unknown_keys(entry, where, _UPSTREAM_KEYS)
        if "password" in entry:
            self.problems.append(
                f"{where}.password: never put a password in the config file; "
                "use password_env or password_file"
            )
        url = self._get(entry, where, "url", str)
        if url and not _is_registry_url(url):
            self.problems.append(f"{where}.url: must be http(s)://host[:port], got {url!r}")
        prefix = self._get(entry, where, "prefix", str)
        if prefix and not REGISTRY_HOST_RE.fullmatch(prefix):
            self.problems.append(
                f"{where}.prefix: must look like a registry host name "
                f"(lowercase, dots), got {prefix!r}"
            )
        mode = self._get(entry, where, "mode", str)
        if mode not in ("online", "offline"):
            self.problems.append(f'{where}.mode: must be "online" or "offline", got {mode!r}')
        username = self._get(entry, where, "username", str)
        password, password_source = self._password(entry, where, "password")
        if password and not username:
            self.problems.append(f"{where}.username: required when a password is configured")
        access = self._access_rule(entry, where, auth, rule=False)
        rules = self._get(entry, where, "rules", list)
        parsed_rules = []
        for number, rule in enumerate(rules):
            rule_where = f"{where}.rules[{number}]"
            if not isinstance(rule, dict):
                self.problems.append(f"{rule_where}: must be a table")
                continue
            self._unknown_keys(rule, rule_where, _RULE_KEYS)
            parsed_rules.append(self._access_rule(rule, rule_where, auth, rule=True))
        return UpstreamConfig(
            name=name,
            url=url.rstrip("/"),
            prefix=prefix,
            default=self._get(entry, where, "default", bool),
            library_namespace=self._get(entry, where, "library_namespace", str),
            offline=mode == "offline",
            username=username,
            password=password,
            ca_file=self._ca_file(entry, where),
            access=access,
            rules=tuple(parsed_rules),
            password_source=password_source,
        )

    def _access_rule(
        self, table: dict[str, Any], where: str, auth: AuthConfig, *, rule: bool
    ) -> AccessRule:
        """`access`, `users`, `groups` (and a rule's `repositories`), checked against what
        [auth] can tell: a policy nobody could satisfy is an error, not a locked door."""
        text = self._get(table, where, "access", str)
        try:
            access = Access(text)
        except ValueError:
            choices = ", ".join(f'"{a.value}"' for a in Access)
            self.problems.append(f"{where}.access: must be one of {choices}, got {text!r}")
            access = Access.ANONYMOUS
        users = self._names(table, where, "users")
        groups = self._names(table, where, "groups")
        patterns: tuple[str, ...] = ()
        if rule:
            patterns = self._names(table, where, "repositories")
            if not patterns:
                self.problems.append(f"{where}.repositories: a rule needs at least one pattern")
        if access is not Access.ANONYMOUS and not auth.enabled:
            self.problems.append(
                f'{where}.access: "{access.value}" needs a way to log in: '
                "set [auth] htpasswd or [auth.ldap]"
            )
        if access is Access.RESTRICTED and not (users or groups):
            self.problems.append(f'{where}: access = "restricted" needs users or groups')
        if access is not Access.RESTRICTED and (users or groups):
            self.problems.append(f'{where}: users and groups apply only to access = "restricted"')
        if groups and auth.groups_file is None and (auth.ldap is None or not auth.ldap.group_base):
            self.problems.append(
                f"{where}.groups: no group source: set [auth] groups_file or "
                "[auth.ldap] group_base and group_filter"
            )
        return AccessRule(access, frozenset(users), frozenset(groups), patterns)

    def _names(self, table: dict[str, Any], where: str, key: str) -> tuple[str, ...]:
        values = self._get(table, where, key, list)
        bad = [v for v in values if not isinstance(v, str) or not v]
        if bad:
            self.problems.append(f"{where}.{key}: must be a list of non-empty strings, got {bad!r}")
        return tuple(v for v in values if isinstance(v, str) and v)

    def _password(
        self, entry: dict[str, Any], where: str, name: str
    ) -> tuple[str, SecretSource | None]:
        """The secret `name` from `<name>_env` or `<name>_file`, never from the file, and
        where it was read from."""
        env_key, file_key = f"{name}_env", f"{name}_file"
        if env_key in entry and file_key in entry:
            self.problems.append(f"{where}: set {env_key} or {file_key}, not both")
            return "", None
        if env_key in entry:
            source = SecretSource(env_key, self._get(entry, where, env_key, str))
        elif file_key in entry:
            path = self._path(entry, where, file_key)
            if path is None:
                return "", None
            source = SecretSource(file_key, str(path))
        else:
            return "", None
        try:
            return source.read(), source
        except SecretUnreadable as exc:
            self.problems.append(f"{where}.{source.key}: {exc}")
            return "", None

    def _ca_file(self, entry: dict[str, Any], where: str) -> Path | None:
        """A readable PEM file holding at least one CA certificate, checked now so a typo
        fails at start instead of as a TLS error on the first pull."""
        path = self._path(entry, where, "ca_file")
        if path is None:
            return None
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
        except ssl.SSLError:
            self.problems.append(f"{where}.ca_file: {path} holds no PEM certificate")
        except OSError as exc:
            self.problems.append(f"{where}.ca_file: cannot read {path}: {exc.strerror}")
        return path

    def _required_path(self, table: dict[str, Any], where: str, key: str) -> Path:
        path = self._path(table, where, key)
        if path is None:
            self.problems.append(f"{where}.{key}: must name a directory")
            return self.base_dir
        return path

    def _path(self, table: dict[str, Any], where: str, key: str) -> Path | None:
        """A path key, relative to the config file's directory; None when empty."""
        text = self._get(table, where, key, str)
        if not text:
            return None
        if "\x00" in text:
            self.problems.append(f"{where}.{key}: a path cannot contain a NUL byte")
            return None
        path = Path(os.path.expanduser(text))
        return path if path.is_absolute() else (self.base_dir / path).resolve()


def _is_registry_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and parts.path in ("", "/")
        and not parts.query
        and not parts.fragment
    )


def _optional_keys(where: str) -> dict[str, Any]:
    """The values of keys a table outside config.toml may leave out."""
    return _LDAP_OPTIONAL if where == "auth.ldap" else _UPSTREAM_OPTIONAL


def _is_http_url(url: str) -> bool:
    parts = _split_url(url)
    return parts is not None and parts.scheme in ("http", "https") and bool(parts.netloc)


def _split_url(url: str) -> SplitResult | None:
    """`urlsplit`, or None for what it cannot split (an unclosed `[` of an IPv6 address)."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


def _empty(kind: type | tuple[type, ...]) -> Any:
    """A harmless stand-in of the wanted type while problems are being collected."""
    return _as_tuple(kind)[0]()


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _default_index_dir(root: Path) -> Path:
    """Node-local by default: SQLite (diskcache) must not live on a network filesystem, and
    keying by the cache root keeps two roots on one node apart."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return base / "hpc-mirror" / f"index-{key}"
