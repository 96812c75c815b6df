"""A blob whose upstream sends no Content-Length (chunked): its size is known once verified,
so the response ends instead of waiting for more bytes."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator

import pytest
import requests
from aiohttp import web

from tests.support.processes import LOOPBACK, free_port

BLOB = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, odd length
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
BLOB_PATH = f"/v2/chunked/img/blobs/{DIGEST}"


async def _api_root(request: web.Request) -> web.Response:
    return web.json_response({})


async def _blob(request: web.Request) -> web.StreamResponse:
    if request.method == "HEAD":  # a HEAD states the length, as registries do
        return web.Response(headers={"Content-Length": str(len(BLOB))})
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for start in range(0, len(BLOB), 64 * 1024):
        await response.write(BLOB[start : start + 64 * 1024])
    await response.write_eof()
    return response


@pytest.fixture
def chunked_upstream() -> Iterator[str]:
    """An upstream serving one blob with chunked encoding, on its own event loop thread."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/v2/", _api_root)
    app.router.add_route("*", BLOB_PATH, _blob)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    port = free_port()
    loop.run_until_complete(web.TCPSite(runner, LOOPBACK, port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_blob_without_content_length_is_served_whole(make_proxy, chunked_upstream):
    proxy = make_proxy({"u": {"url": chunked_upstream, "prefix": "c.test", "default": True}})
    response = requests.get(proxy.url + BLOB_PATH, timeout=20)
    assert response.status_code == 200
    assert response.content == BLOB
    assert proxy.wait_stored(DIGEST) == len(BLOB)
    cached = requests.get(proxy.url + BLOB_PATH, timeout=20)
    assert int(cached.headers["Content-Length"]) == len(BLOB) and cached.content == BLOB
