"""HTTP of manifest PUT and DELETE in the local namespace: who may write (the gate), the
body read within the size limit, the answer and what the push counts."""

from __future__ import annotations

from aiohttp import web

from mirror.errors import ManifestTooLarge, MirrorError
from mirror.metrics import series
from mirror.proxy.served import served
from mirror.proxy.service import MAX_MANIFEST_BYTES, ProxyService
from mirror.proxy.writes import writable_repository
from mirror.reference import Repository

_READ_CHUNK = 64 * 1024


async def write_manifest(request: web.Request, service: ProxyService) -> web.Response:
    """PUT or DELETE of `/v2/<name>/manifests/<reference>`, for writers of `<name>`."""
    repo, _ = await writable_repository(request, service)
    reference = request.match_info["reference"]
    if request.method == "DELETE":
        service.local.delete(repo, reference)
        return web.Response(status=202)
    return await _put_manifest(request, service, repo, reference)


async def _put_manifest(
    request: web.Request, service: ProxyService, repo: Repository, reference: str
) -> web.Response:
    body = await _read_body(request)
    served(request).received_bytes = len(body)
    series.PUSHED_BYTES.inc(len(body))
    try:
        pushed = await service.local.put_manifest(
            repo, reference, body, request.headers.get("Content-Type", ""), served(request).user
        )
    except MirrorError:
        series.PUSHES.labels(series.PUSHED_MANIFEST, series.REFUSED).inc()
        raise
    series.PUSHES.labels(series.PUSHED_MANIFEST, series.STORED).inc()
    headers = {
        "Location": f"/v2/{request.match_info['name']}/manifests/{pushed.digest}",
        "Docker-Content-Digest": str(pushed.digest),
    }
    if pushed.subject is not None:
        headers["OCI-Subject"] = str(pushed.subject)
    return web.Response(status=201, headers=headers)


async def _read_body(request: web.Request) -> bytes:
    """The request body, refused (413) beyond MAX_MANIFEST_BYTES before more is read."""
    too_large = ManifestTooLarge(f"a manifest may have at most {MAX_MANIFEST_BYTES} bytes")
    if (request.content_length or 0) > MAX_MANIFEST_BYTES:
        series.PUSHES.labels(series.PUSHED_MANIFEST, series.REFUSED).inc()
        raise too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        body += chunk
        if len(body) > MAX_MANIFEST_BYTES:
            series.PUSHES.labels(series.PUSHED_MANIFEST, series.REFUSED).inc()
            raise too_large
    return bytes(body)
