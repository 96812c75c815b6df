"""Domain errors. Each carries the distribution-spec error code and HTTP status it maps to,
so the HTTP layer turns any of them into an OCI error body without knowing the cause."""

from __future__ import annotations

import errno

# errno values saying this process or host ran out of descriptors, buffers or memory: the
# mirror's own trouble, never evidence against an upstream or a client.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def out_of_resources(exc: BaseException) -> bool:
    """True when `exc` is an OSError for a descriptor, buffer or memory shortage."""
    return isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS


class MirrorError(Exception):
    """Base of every error a client may see. `message` must be safe to show to a client."""

    code = "UNKNOWN"
    status = 500

    def __init__(self, message: str = "", detail: object | None = None) -> None:
        super().__init__(message or self.code.lower().replace("_", " "))
        self.message = str(self.args[0])
        self.detail = detail
        self.headers: dict[str, str] = {}  # sent with the error response (a challenge)


class NameInvalid(MirrorError):
    code, status = "NAME_INVALID", 400


class TagInvalid(MirrorError):
    code, status = "TAG_INVALID", 400


class DigestInvalid(MirrorError):
    code, status = "DIGEST_INVALID", 400


class NameUnknown(MirrorError):
    code, status = "NAME_UNKNOWN", 404


class ManifestUnknown(MirrorError):
    code, status = "MANIFEST_UNKNOWN", 404


class PlatformUnknown(ManifestUnknown):
    """An image index holds no manifest for the platform asked for."""


class BlobUnknown(MirrorError):
    code, status = "BLOB_UNKNOWN", 404


class RangeInvalid(MirrorError):
    code, status = "RANGE_INVALID", 416


class Unsupported(MirrorError):
    code, status = "UNSUPPORTED", 405


class PaginationInvalid(MirrorError):
    code, status = "PAGINATION_NUMBER_INVALID", 400


class Denied(MirrorError):
    """The upstream refused the mirror's credentials for this repository."""

    code, status = "DENIED", 403


class Unauthorized(MirrorError):
    """No credentials, or ones that are not valid: the response carries the challenge that
    tells the client where to log in (`WWW-Authenticate`)."""

    code, status = "UNAUTHORIZED", 401

    def __init__(self, message: str, challenge: str) -> None:
        super().__init__(message)
        self.headers["WWW-Authenticate"] = challenge


class PullDenied(Denied):
    """The caller is known but the site's policy does not let them pull this repository."""


class PushDenied(Denied):
    """The caller is known but may not write to this repository of the local namespace."""


class QuotaExceeded(Denied):
    """A push would take a local namespace past `[local] quota` (the message names the
    namespace, its use and its quota)."""


class BlobUploadUnknown(MirrorError):
    code, status = "BLOB_UPLOAD_UNKNOWN", 404


class BlobUploadInvalid(MirrorError):
    code, status = "BLOB_UPLOAD_INVALID", 400


class SizeInvalid(MirrorError):
    code, status = "SIZE_INVALID", 400


class ManifestInvalid(MirrorError):
    code, status = "MANIFEST_INVALID", 400


class ManifestBlobUnknown(MirrorError):
    """A pushed manifest names a blob or child manifest its repository does not have."""

    code, status = "MANIFEST_BLOB_UNKNOWN", 400


class ManifestTooLarge(ManifestInvalid):
    """A pushed manifest is larger than the mirror takes (the spec's 413)."""

    status = 413


class ReferrersUnsupported(MirrorError):
    """The referrers API answers for the local namespace only: a 404 tells clients to use
    the referrers tag schema instead, as the spec asks of registries without the API."""

    code, status = "UNSUPPORTED", 404


class TooManyRequests(MirrorError):
    """Too many failed logins from this address or for this user name: wait and retry."""

    code, status = "TOOMANYREQUESTS", 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after)


class DirectoryUnavailable(MirrorError):
    """The user directory (LDAP) did not answer: not a failed login, retry later."""

    code, status = "UNAVAILABLE", 503


class DigestMismatch(MirrorError):
    """Upstream content did not hash to the digest it was asked for; nothing was cached."""

    code, status = "DIGEST_INVALID", 502


class UpstreamFailed(MirrorError):
    """The upstream failed (unreachable, timed out, 5xx, 429): a cached answer may stand in."""

    code, status = "UNAVAILABLE", 502


class UpstreamUnavailable(UpstreamFailed):
    """The upstream could not be reached."""

    status = 503


class UpstreamOffline(UpstreamFailed):
    """The upstream is configured offline: the mirror never connects to it."""

    status = 503


class UpstreamBadGateway(UpstreamFailed):
    """The upstream answered with an error or something the mirror cannot use."""

    status = 502


class UpstreamTimeout(UpstreamFailed):
    """The upstream did not answer within the configured timeouts."""

    status = 504


class StoreRefused(MirrorError):
    """The cache store's filesystem refused a write (full, over quota, failing): the
    content is served from the upstream without being cached. `cause` says why."""

    code, status = "UNAVAILABLE", 507

    def __init__(self, cause: OSError) -> None:
        name = errno.errorcode.get(cause.errno or 0, str(cause.errno))
        super().__init__(f"the cache store refused a write: {name} ({cause.strerror})")
        self.cause = cause


class CacheMissing(MirrorError):
    """A command that only reads the cache was pointed at a directory holding none."""

    code, status = "UNAVAILABLE", 503


class MirrorOverloaded(MirrorError):
    """The mirror itself is out of file descriptors or memory for the moment: retry later."""

    code, status = "UNAVAILABLE", 503


class InvalidValue(ValueError):
    """Something a person wrote on a command line or in a list file (a size, an age, an
    image name) that cannot be used; the CLI reports it and exits 2."""


class ConfigError(Exception):
    """Every problem found in one config file; `problems` holds one line per problem."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


class ConversionRefused(MirrorError):
    """An image that cannot become a SIF (bad names, damaged or unsupported layers, too
    big): the message names the image and the layer; nothing was cached."""

    code, status = "MANIFEST_INVALID", 422


class ConversionFailed(MirrorError):
    """The mirror could not finish a conversion for its own reasons (a tool failed)."""

    code, status = "UNKNOWN", 500


class ConversionCancelled(MirrorError):
    """A conversion was stopped before it finished; it left nothing behind."""

    code, status = "UNAVAILABLE", 503


class ConversionPending(MirrorError):
    """A pull waited `[sif] max_wait_seconds` for a conversion that goes on: retry later."""

    code, status = "UNAVAILABLE", 503
    RETRY_AFTER_SECONDS = 30

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = str(self.RETRY_AFTER_SECONDS)
