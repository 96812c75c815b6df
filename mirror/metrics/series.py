"""Every series the mirror exports, named and labelled in one place.

Labels hold only bounded sets: route kinds, methods, statuses, upstream names from the
config, outcomes. Never a repository name (it would leak restricted names and grow without
bound), a user, a tag or a digest. With `--workers N` every value lives in a file shared
through prometheus_client's multiprocess mode; each gauge says how the workers' values
combine (`multiprocess_mode`).
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from mirror import __version__

# The `_created` samples exist only for a single process; without them one process and
# several workers export the same set.
disable_created_metrics()

# The series of this process (a single-process `serve`, the tests); workers are read from
# their shared directory instead (see `exposition`).
REGISTRY = CollectorRegistry()
_PREFIX = "hpc_mirror"

# Route kinds of client requests and of upstream requests.
MANIFEST, BLOB, TAGS, CATALOG = "manifest", "blob", "tags", "catalog"
TOKEN, OTHER = "token", "other"
# Where the bytes of a blob response come from; with the two answers a cached tag can
# also get, where a blob or manifest response came from in the access log.
HIT, PASS_THROUGH = "hit", "pass_through"
FILL_LEADER, FILL_FOLLOWER = "fill_leader", "fill_follower"
REVALIDATED, STALE = "revalidated", "stale"
# Outcomes of revalidating an expired tag with the upstream.
UNCHANGED, MOVED, FAILED = "unchanged", "moved", "failed"
# Route kinds of the push API, and what a push was.
UPLOAD, REFERRERS = "upload", "referrers"
PUSHED_BLOB, PUSHED_MANIFEST = "blob", "manifest"
# Outcomes of a push: stored, or refused (bad digest or content, quota, unknown blobs).
STORED, REFUSED = "stored", "refused"
# Outcomes of a conversion this instance ran (also REFUSED, FAILED), and of a pull that
# waited for a conversion it did not run.
CONVERTED, JOINED = "converted", "joined"
# The status label of an upstream request that got no answer (refused, reset, timed out).
NO_ANSWER = "error"

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """A request method as a label: any method a client makes up counts as `other`."""
    return method if method in _METHODS else OTHER


REQUESTS = Counter(
    "requests",
    "Client requests answered, by method, route kind and HTTP status (499: the client "
    "went away before an answer).",
    ["method", "route", "status"],
    namespace=_PREFIX,
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "request_duration_seconds",
    "Time from a client request's arrival to the end of its response, by route kind.",
    ["route"],
    namespace=_PREFIX,
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BLOB_BYTES_SENT = Counter(
    "blob_sent_bytes",
    "Bytes of blob bodies sent to clients, by where they came from: hit (the cache), "
    "fill_leader (the fill this request started), fill_follower (a fill it joined), "
    "pass_through (the upstream, uncached, while the store refuses writes).",
    ["result"],
    namespace=_PREFIX,
    registry=REGISTRY,
)
UPSTREAM_REQUESTS = Counter(
    "upstream_requests",
    "HTTP requests sent to upstream registries (every attempt, redirect and token fetch), "
    "by upstream, method, route kind and status (error: no answer).",
    ["upstream", "method", "route", "status"],
    namespace=_PREFIX,
    registry=REGISTRY,
)
UPSTREAM_BYTES = Counter(
    "upstream_received_bytes",
    "Bytes of manifest, tag list and blob bodies received from upstream registries.",
    ["upstream"],
    namespace=_PREFIX,
    registry=REGISTRY,
)
UPSTREAM_RETRIES = Counter(
    "upstream_retries",
    "Upstream requests tried again because the upstream looked unwell.",
    ["upstream"],
    namespace=_PREFIX,
    registry=REGISTRY,
)
BREAKER_OPEN = Gauge(
    "upstream_breaker_open",
    "1 while an upstream's circuit breaker is open (in any worker), else 0.",
    ["upstream"],
    namespace=_PREFIX,
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
FILLS_IN_FLIGHT = Gauge(
    "fills_in_flight",
    "Blob downloads into the store running now.",
    namespace=_PREFIX,
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
FILL_SECONDS = Histogram(
    "fill_duration_seconds",
    "How long blob downloads into the store took, by outcome (verified or failed).",
    ["outcome"],
    namespace=_PREFIX,
    registry=REGISTRY,
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
HERD_FOLLOWERS = Counter(
    "herd_followers",
    "Blob requests that joined a download already running (here or on another instance) "
    "instead of asking the upstream.",
    namespace=_PREFIX,
    registry=REGISTRY,
)
STALE_ANSWERS = Counter(
    "stale_answers",
    "Tags answered from the cache past their TTL because the upstream failed.",
    ["upstream"],
    namespace=_PREFIX,
    registry=REGISTRY,
)
TAG_REVALIDATIONS = Counter(
    "tag_revalidations",
    "Expired tags asked of the upstream again, by outcome: unchanged, moved, failed.",
    ["upstream", "outcome"],
    namespace=_PREFIX,
    registry=REGISTRY,
)
CACHE_BYTES = Gauge(
    "cache_size_bytes",
    "Bytes of the blobs and manifests in the store (all instances'), kept as fills commit "
    "and corrected by a periodic scan.",
    namespace=_PREFIX,
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
CACHE_BLOBS = Gauge(
    "cache_blobs",
    "Blobs and manifests in the store (all instances'), kept like cache_size_bytes.",
    namespace=_PREFIX,
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
PUSHES = Counter(
    "pushes",
    "Blobs and manifests pushed to the local namespace, by kind (blob, manifest) and "
    "outcome (stored, refused).",
    ["kind", "outcome"],
    namespace=_PREFIX,
    registry=REGISTRY,
)
PUSHED_BYTES = Counter(
    "pushed_bytes",
    "Bytes received by pushes to the local namespace (blob uploads and manifests), "
    "whether or not they were stored in the end.",
    namespace=_PREFIX,
    unit="bytes",
    registry=REGISTRY,
)
CONVERSIONS = Counter(
    "conversions",
    "Conversions to a SIF this instance ran, by outcome (converted, refused, failed), and "
    "pulls that waited for one they did not run (joined).",
    ["outcome"],
    namespace=_PREFIX,
    registry=REGISTRY,
)
CONVERSION_SECONDS = Histogram(
    "conversion_duration_seconds",
    "How long conversions this instance ran took, by outcome (converted, refused, failed).",
    ["outcome"],
    namespace=_PREFIX,
    registry=REGISTRY,
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
CONVERSIONS_IN_FLIGHT = Gauge(
    "conversions_in_flight",
    "Conversions to a SIF running now.",
    namespace=_PREFIX,
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
BUILD_INFO = Gauge(
    "build_info",
    "Always 1; the labels say which hpc-mirror (and Python) is running.",
    ["version", "python"],
    namespace=_PREFIX,
    registry=REGISTRY,
    multiprocess_mode="max",
)
BUILD_INFO.labels(__version__, platform.python_version()).set(1)
