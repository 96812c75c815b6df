"""HTTP only: parse requests, call the proxy service, write responses and OCI errors."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import IO
from urllib.parse import urlencode

from aiohttp import web

from mirror.errors import (
    ManifestUnknown,
    MirrorError,
    MirrorOverloaded,
    NameUnknown,
    PaginationInvalid,
    RangeInvalid,
    ReferrersUnsupported,
    Unsupported,
    out_of_resources,
)
from mirror.metrics import series
from mirror.proxy import upload_handlers
from mirror.proxy.access_gate import GATE
from mirror.proxy.converted import ConvertedImages
from mirror.proxy.manifest_writes import write_manifest
from mirror.proxy.ranges import content_range, parse_range
from mirror.proxy.served import Served, served
from mirror.proxy.service import ProxyService
from mirror.proxy.sources import BlobSource
from mirror.proxy.throttled_log import ThrottledWarning
from mirror.reference import OCI_INDEX, Digest, Repository

log = logging.getLogger(__name__)

SERVICE = web.AppKey("service", ProxyService)
CONVERTED = web.AppKey("converted", ConvertedImages)
# The warning for every failure for want of descriptors or memory: a flood of them is one.
OUT_OF_RESOURCES = web.AppKey("out_of_resources", ThrottledWarning)
API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
_PULL_METHODS = ("GET", "HEAD")
_WRITE_METHODS = ("PUT", "DELETE")
# Bytes per pread + write where sendfile does not apply (TLS, chunked encoding): over TLS,
# 512 KiB was as fast as 1 MiB and faster than 128 KiB or 4 MiB, and a client that stops
# reading holds about 2 MiB of the mirror's memory instead of 3.5 (README, "Performance").
_WRITE_CHUNK = 512 * 1024


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/v2/", api_root)
    app.router.add_route("*", "/v2", api_root)
    app.router.add_route("*", "/v2/_catalog", repository_list)
    app.router.add_route("*", "/v2/{name:.+}/manifests/{reference}", manifest)
    app.router.add_route("*", "/v2/{name:.+}/blobs/uploads/{tail:.*}", blob_upload)
    app.router.add_route("*", "/v2/{name:.+}/blobs/{digest}", blob)
    app.router.add_route("*", "/v2/{name:.+}/tags/list", tags_list)
    app.router.add_route("*", "/v2/{name:.+}/referrers/{digest}", referrers)


def add_site_routes(app: web.Application, site_dir: Path) -> None:
    """Publish the rendered catalog site at / next to /v2/. The directory is looked up per
    request, so a new render (swapped in atomically) is served at once."""

    async def site_root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/index.html")

    site_dir.mkdir(parents=True, exist_ok=True)
    app.router.add_get("/", site_root)
    app.router.add_static("/", site_dir, follow_symlinks=False, show_index=False)


def oci_error(error: MirrorError) -> web.Response:
    body = {"errors": [{"code": error.code, "message": error.message, "detail": error.detail}]}
    return web.json_response(
        body, status=error.status, headers={**API_VERSION_HEADER, **error.headers}
    )


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Every failure becomes distribution-spec JSON; never a stack trace or upstream text."""
    try:
        response = await handler(request)
    except MirrorError as exc:
        return oci_error(exc)
    except web.HTTPNotFound:
        return oci_error(NameUnknown("no such endpoint or repository"))
    except web.HTTPMethodNotAllowed:
        return oci_error(Unsupported("this mirror is read-only"))
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        if out_of_resources(exc):
            request.app[OUT_OF_RESOURCES]("%s %s failed: %s", request.method, request.path, exc)
            return oci_error(MirrorOverloaded("the mirror is overloaded; retry shortly"))
        log.exception("unexpected error on %s %s", request.method, request.path)
        return oci_error(MirrorError("internal error"))
    response.headers.update(API_VERSION_HEADER)
    return response


def _service(request: web.Request) -> ProxyService:
    return request.app[SERVICE]


def _images(request: web.Request, repo: Repository) -> ProxyService | ConvertedImages:
    """What serves `repo`: the SIF namespace's repositories are converted images."""
    if _service(request).router.sif_names.is_sif(repo):
        return request.app[CONVERTED]
    return _service(request)


def _check_pull(request: web.Request) -> None:
    if request.method not in _PULL_METHODS:
        raise Unsupported(f"{request.method} is not supported: this mirror is read-only")


async def _route_pullable(request: web.Request) -> Repository:
    """The repository the request names, once the caller is known to be allowed to pull
    it (with `[auth]` on; without it, everyone is)."""
    _check_pull(request)
    repo = _service(request).route(request.match_info["name"], request.query.get("ns"))
    served(request).upstream = _service(request).upstream_name(repo)
    gate = request.app.get(GATE)
    if gate is not None:
        await gate.check_pull(request, repo)
    return repo


async def api_root(request: web.Request) -> web.Response:
    _check_pull(request)
    gate = request.app.get(GATE)
    if gate is not None:
        await gate.check_signed_in(request)
    return web.json_response({})


async def blob_upload(request: web.Request) -> web.StreamResponse:
    return await upload_handlers.blob_upload(request, _service(request))


async def manifest(request: web.Request) -> web.Response:
    if request.method in _WRITE_METHODS:
        return await write_manifest(request, _service(request))
    repo = await _route_pullable(request)
    service = _images(request, repo)
    reference = request.match_info["reference"]
    found = await service.get_manifest(repo, reference)
    served(request).cache = found.cache
    # Go clients (containers/image) send one Accept header line per media type.
    accept = ",".join(request.headers.getall("Accept", []))
    if not _acceptable(accept, found.media_type):
        raise ManifestUnknown(
            f"manifest {reference!r} is a {found.media_type}, which the "
            "request's Accept header does not allow"
        )
    etag = f'"{found.digest}"'
    headers = {
        "Docker-Content-Digest": str(found.digest),
        "ETag": etag,
        "Content-Type": found.media_type,
    }
    if found.warning:
        headers["Warning"] = found.warning
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(found.body))
        return web.Response(headers=headers)
    return web.Response(body=found.body, headers=headers)


def _acceptable(accept: str, media_type: str) -> bool:
    """A stored manifest may be refused only when the client named manifest types and this
    is not one of them (lets single-type clients fall back, as distribution does)."""
    offered = {part.split(";")[0].strip() for part in accept.split(",") if part.strip()}
    named_manifest_types = {t for t in offered if "manifest" in t or "index" in t}
    if not named_manifest_types or "*/*" in offered:
        return True
    return media_type in offered


async def blob(request: web.Request) -> web.StreamResponse:
    repo = await _route_pullable(request)
    service = _images(request, repo)
    digest = Digest.parse(request.match_info["digest"])
    headers = {
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
    }
    if request.headers.get("If-None-Match") == headers["ETag"]:
        return web.Response(status=304, headers=headers)
    if request.method == "HEAD":
        found = await service.blob_size(repo, digest)
        served(request).cache = found.cache
        headers["Content-Length"] = str(found.size)
        return web.Response(headers=headers)
    source = await service.open_blob(repo, digest)
    try:
        return await _send_blob(request, source, headers)
    finally:
        served(request).cache = source.cache_result  # a refused fill may end as pass-through
        source.close()


async def _send_blob(
    request: web.Request, source: BlobSource, headers: dict[str, str]
) -> web.StreamResponse:
    """Send a blob (or one range of it) with sendfile, as fast as the source allows."""
    size = source.size
    start, end, status = 0, size, 200
    range_header = request.headers.get("Range")
    if range_header and size is not None:
        bounds = parse_range(range_header, size)
        if bounds is None:
            raise RangeInvalid(f"range {range_header[:80]!r} is not satisfiable for {size} bytes")
        start, end = bounds
        status = 206
        headers["Content-Range"] = content_range(start, end, size)
    response = web.StreamResponse(status=status, headers=headers)
    if end is not None:
        response.content_length = end - start
    await response.prepare(request)
    record = served(request)
    record.status, record.body_bytes = status, 0
    try:
        if end is None:
            await _send_growing(request, response, source)
        else:
            await _send_span(request, response, source, start, end)
    except MirrorError as exc:
        # Headers are gone already: the only honest signal left is to cut the connection.
        log.warning("aborting %s: %s", request.path, exc.message)
        if request.transport is not None:
            request.transport.abort()
        return response
    except ConnectionError:
        log.debug("client went away during %s", request.path)  # the fill goes on
        return response
    await response.write_eof()
    return response


async def _send_span(
    request: web.Request, response: web.StreamResponse, source: BlobSource, start: int, end: int
) -> None:
    loop = asyncio.get_running_loop()
    record = served(request)
    position = start
    while position < end:
        bound = await source.sendable(position, end)
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")  # handled by _send_blob
        file = source.file
        if request.secure or file is None:
            await _write_chunks(response, source, position, bound, record)
        else:
            await _sendfile(loop, transport, file, source, position, bound, record)
        position = bound


async def _sendfile(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    file: IO[bytes],
    source: BlobSource,
    start: int,
    end: int,
    record: Served,
) -> None:
    """sendfile, counting the bytes that went out even when the client hangs up part-way:
    asyncio leaves the file's position after the last byte sent."""
    file.seek(start)
    try:
        await loop.sendfile(transport, file, start, end - start)
    finally:
        if not file.closed:
            _count_sent(record, source, file.tell() - start)


async def _send_growing(
    request: web.Request, response: web.StreamResponse, source: BlobSource
) -> None:
    """An upstream that sent no Content-Length: chunked encoding, so no sendfile."""
    position = 0
    while True:
        bound = await source.sendable(position, 1 << 62)
        await _write_chunks(response, source, position, bound, served(request))
        position = bound
        if source.size is not None and position >= source.size:
            return


async def _write_chunks(
    response: web.StreamResponse, source: BlobSource, start: int, end: int, record: Served
) -> None:
    position = start
    while position < end:
        chunk = source.read(position, min(_WRITE_CHUNK, end - position))
        if not chunk:
            return
        await response.write(chunk)
        _count_sent(record, source, len(chunk))
        position += len(chunk)


def _count_sent(record: Served, source: BlobSource, count: int) -> None:
    """Blob body bytes that went out: for /metrics and the access log."""
    series.BLOB_BYTES_SENT.labels(source.cache_result).inc(count)
    record.body_bytes = (record.body_bytes or 0) + count


def _page(items: list[str], request: web.Request, key: str) -> web.Response:
    """Apply the spec's `n` / `last` pagination to a sorted list, with a Link to the next
    page that keeps the request's `ns` (its upstream)."""
    last = request.query.get("last")
    if last is not None:
        items = [item for item in items if item > last]
    headers = {}
    if "n" in request.query:
        count = _page_size(request.query["n"])
        if len(items) > count:
            items = items[:count]
            if items:
                ns = request.query.get("ns")
                query = {"n": count, "last": items[-1], **({"ns": ns} if ns else {})}
                headers["Link"] = f'<{request.path}?{urlencode(query)}>; rel="next"'
    return web.Response(
        text=json.dumps({**_extra(request, key), key: items}),
        content_type="application/json",
        headers=headers,
    )


def _page_size(text: str) -> int:
    """`n`: ASCII digits only (int() also takes signs, spaces, '_' and other scripts')."""
    try:
        if text.isascii() and text.isdigit():
            return int(text)
    except ValueError:  # more digits than int() converts
        pass
    raise PaginationInvalid("n must be a non-negative integer")


def _extra(request: web.Request, key: str) -> dict:
    return {"name": request.match_info["name"]} if key == "tags" else {}


async def tags_list(request: web.Request) -> web.Response:
    repo = await _route_pullable(request)
    service = _images(request, repo)
    tags = await service.list_tags(repo)
    return _page(sorted(tags), request, "tags")


async def referrers(request: web.Request) -> web.Response:
    """The OCI 1.1 referrers API, for the local namespace: an image index of the manifests
    whose `subject` is the digest, filtered by `?artifactType=`. Elsewhere a 404, so clients
    use the referrers tag schema, which the pull-through cache serves like any tag."""
    repo = await _route_pullable(request)
    subject = Digest.parse(request.match_info["digest"])
    if not _service(request).router.is_local(repo):
        raise ReferrersUnsupported(
            f"the referrers API answers only for the local namespace, not {repo}"
        )
    artifact_type = request.query.get("artifactType")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": _service(request).local.referrers(repo, subject, artifact_type),
    }
    headers = {"Content-Type": OCI_INDEX}
    if artifact_type is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    return web.Response(body=json.dumps(index).encode(), headers=headers)


async def repository_list(request: web.Request) -> web.Response:
    """`/v2/_catalog`: the repositories cached here (not the HTML catalog site) that the
    caller may pull."""
    _check_pull(request)
    gate = request.app.get(GATE)
    if gate is None:
        return _page(_service(request).repositories(), request, "repositories")
    identity = (await gate.check_signed_in(request)).identity
    visible = _service(request).repositories(lambda repo: gate.may_pull(identity, repo))
    return _page(visible, request, "repositories")
