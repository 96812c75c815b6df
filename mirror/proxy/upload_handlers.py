"""HTTP of blob uploads (`/v2/<name>/blobs/uploads/...`): every upload form of the OCI
distribution spec, for repositories of the local namespace; any other is read-only."""

from __future__ import annotations

import re

from aiohttp import web

from mirror.cache.store import UploadRecord
from mirror.errors import MirrorError, RangeInvalid, Unsupported
from mirror.local.uploads import BlobUploads, OffsetMismatch
from mirror.metrics import series
from mirror.proxy.access_gate import GATE, Caller
from mirror.proxy.served import served
from mirror.proxy.service import ProxyService
from mirror.proxy.writes import writable_repository
from mirror.reference import Digest, Repository

# `<start>-<end>`, inclusive, as the spec writes it (some clients add distribution's
# `bytes=`).
_CONTENT_RANGE_RE = re.compile(r"(?:bytes[ =])?([0-9]{1,19})-([0-9]{1,19})")


async def blob_upload(request: web.Request, service: ProxyService) -> web.StreamResponse:
    """Dispatch on the method and on whether the path names an upload session."""
    repo, caller = await writable_repository(request, service)
    served(request).received_bytes = 0  # the access log shows what a push received
    upload_id = request.match_info["tail"]
    if not upload_id:
        if request.method != "POST":
            raise Unsupported(f"{request.method} of /blobs/uploads/ is not supported")
        return await _post(request, service, repo, caller)
    handler = _SESSION_METHODS.get("GET" if request.method == "HEAD" else request.method)
    if handler is None:
        raise Unsupported(f"{request.method} of an upload is not supported")
    record = await service.uploads.session(upload_id, repo, caller.identity.user)
    try:
        return await handler(request, service.uploads, record)
    except OffsetMismatch as exc:
        exc.headers.update(_session_headers(request, record, exc.size))
        raise


# -- POST: start (monolithic with `digest`, a mount with `mount` and `from`) -----------------
async def _post(
    request: web.Request, service: ProxyService, repo: Repository, caller: Caller
) -> web.StreamResponse:
    uploads = service.uploads
    if "mount" in request.query:
        mounted = Digest.parse(request.query["mount"])
        if await _mount(request, service, repo, caller, mounted):
            return _blob_created(request, mounted)
    digest = Digest.parse(request.query["digest"]) if "digest" in request.query else None
    record = await uploads.start(repo, caller.identity.user)
    if digest is not None:
        return await _finish(request, uploads, record, digest)
    return _accepted(request, record, 0)


async def _mount(
    request: web.Request, service: ProxyService, repo: Repository, caller: Caller, digest: Digest
) -> bool:
    """Mount `digest` from `from` when the caller may read `from` (by the policy, and by
    the token's scope if it came with one) and it has the blob."""
    try:
        from_repo = service.route(request.query.get("from", ""))
    except MirrorError:
        return False
    readable = request.app[GATE].may_read(caller, from_repo)
    return readable and await service.uploads.mount(repo, digest, from_repo)


# -- on a session ------------------------------------------------------------------------------
async def _status(
    request: web.Request, uploads: BlobUploads, record: UploadRecord
) -> web.StreamResponse:
    return web.Response(status=204, headers=_session_headers(request, record, record.size))


async def _patch(
    request: web.Request, uploads: BlobUploads, record: UploadRecord
) -> web.StreamResponse:
    size = await _receive(request, uploads, record, _chunk_start(request))
    return _accepted(request, record, size)


async def _put(
    request: web.Request, uploads: BlobUploads, record: UploadRecord
) -> web.StreamResponse:
    digest = Digest.parse(request.query.get("digest", ""))
    return await _finish(request, uploads, record, digest)


async def _delete(
    request: web.Request, uploads: BlobUploads, record: UploadRecord
) -> web.StreamResponse:
    await uploads.cancel(record)
    return web.Response(status=204)


_SESSION_METHODS = {"GET": _status, "PATCH": _patch, "PUT": _put, "DELETE": _delete}


async def _finish(
    request: web.Request, uploads: BlobUploads, record: UploadRecord, digest: Digest
) -> web.StreamResponse:
    """The last chunk (if the request has a body) and the check against `digest`."""
    if request.body_exists:
        await _receive(request, uploads, record, _chunk_start(request), digest)
    await uploads.finish(record, digest)
    return _blob_created(request, digest)


async def _receive(
    request: web.Request,
    uploads: BlobUploads,
    record: UploadRecord,
    start: int | None,
    digest: Digest | None = None,
) -> int:
    """Stream the request's body onto the upload, counting what arrives."""
    record_served = served(request)

    def received(count: int) -> None:
        record_served.received_bytes = (record_served.received_bytes or 0) + count
        series.PUSHED_BYTES.inc(count)

    return await uploads.append(record, request.content.iter_any(), received, start, digest)


def _chunk_start(request: web.Request) -> int | None:
    """Where the chunk's `Content-Range` says it starts (None: at the end); a range that
    disagrees with `Content-Length` is refused before any byte is read."""
    header = request.headers.get("Content-Range")
    if header is None:
        return None
    match = _CONTENT_RANGE_RE.fullmatch(header.strip())
    if match is None:
        raise RangeInvalid(f"Content-Range {header[:80]!r} is not <start>-<end>")
    start, end = int(match.group(1)), int(match.group(2))
    length = request.content_length
    if end < start or (length is not None and length != end - start + 1):
        raise RangeInvalid(f"Content-Range {header[:80]!r} does not match the body's length")
    return start


# -- responses ---------------------------------------------------------------------------------
def _session_headers(request: web.Request, record: UploadRecord, size: int) -> dict[str, str]:
    """Where the upload goes on and what it holds (`Range` ends at its last byte; `0-0`
    while it is empty, as distribution answers)."""
    name = request.match_info["name"]
    return {
        "Location": f"/v2/{name}/blobs/uploads/{record.upload_id}",
        "Range": f"0-{max(size - 1, 0)}",
        "Docker-Upload-UUID": record.upload_id,
    }


def _accepted(request: web.Request, record: UploadRecord, size: int) -> web.Response:
    return web.Response(status=202, headers=_session_headers(request, record, size))


def _blob_created(request: web.Request, digest: Digest) -> web.Response:
    name = request.match_info["name"]
    headers = {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": str(digest)}
    return web.Response(status=201, headers=headers)
