"""A deliberately misbehaving upstream registry, for faults a real registry cannot produce.

Use the real ``docker-registry`` (:mod:`tests.support.registry`) for everything else; this
server exists only for broken transfers: truncated bodies, wrong bytes, connection
resets, 5xx/429 answers, slow drips and hangs. It speaks just enough of the distribution
API for one image, ``fault/img:1.0``: ``/v2/``, the manifest (by tag or digest), its
config blob (always well-behaved) and one ~2 MiB layer whose GET follows :attr:`mode`.

The aiohttp app runs in its own event loop on a background thread, so synchronous and
asynchronous tests can both use it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, get_args

from aiohttp import web

from . import oci
from .processes import LOOPBACK, LoopbackServer, free_port

if TYPE_CHECKING:
    from .tls import LoopbackCA

FaultMode = Literal[
    "ok", "truncated", "wrong_digest", "reset", "status500", "status429", "slow", "hang", "stall"
]
FAULT_MODES: tuple[str, ...] = get_args(FaultMode)

REPOSITORY = "fault/img"
TAG = "1.0"
LAYER_SIZE = 2 * 1024 * 1024 + 123  # odd on purpose
CHUNK = 64 * 1024


@dataclasses.dataclass
class LayerTransfer:
    """One GET of the layer: the Range header it carried (None: none), and the body bytes
    the server handed to the connection."""

    range: str | None
    sent: int = 0


def _error_body(code: str, message: str) -> dict:
    return {"errors": [{"code": code, "message": message, "detail": None}]}


class FaultyUpstream(LoopbackServer):
    """Serve ``fault/img:1.0`` with a layer blob that misbehaves according to ``mode``.

    Modes (layer blob only; manifest and config are always served correctly):

    - ``ok``: the right bytes; honours a single ``Range: bytes=a-b`` (206) unless
      ``ignore_range`` (then always the whole layer with 200, as some upstreams do).
    - ``truncated``: Content-Length of the full size, half the bytes, then a clean close.
    - ``wrong_digest``: the full size of *other* bytes.
    - ``reset``: a quarter of the bytes, then a TCP RST (SO_LINGER 0 + abort).
    - ``status500`` / ``status429``: an error (429 carries ``Retry-After: 1``); HEAD too.
    - ``slow``: the right bytes, ``slow_chunk`` bytes every ``slow_interval`` seconds;
      honours a Range like ``ok``.
    - ``hang``: headers never come (HEAD too); the connection is dropped on :meth:`stop`.
    - ``stall``: a quarter of the bytes, then nothing until :meth:`stop`.

    With ``tls`` it serves HTTPS with that CA's certificate for 127.0.0.1.

    ``mode`` may be changed while running. With ``fail_times=n`` only the first ``n``
    layer GETs misbehave and later ones are ``ok`` (for retry/resume tests).
    :attr:`counts` maps ``(method, path)`` to the number of requests received;
    :attr:`layer_transfers` lists each layer GET's Range header and the bytes it was sent.
    """

    def __init__(
        self,
        mode: FaultMode = "ok",
        *,
        fail_times: int | None = None,
        slow_chunk: int = 8 * 1024,
        slow_interval: float = 0.2,
        ignore_range: bool = False,
        tls: LoopbackCA | None = None,
    ) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {FAULT_MODES}")
        self.mode: FaultMode = mode
        self.fail_times = fail_times
        self.slow_chunk = slow_chunk
        self.slow_interval = slow_interval
        self.ignore_range = ignore_range
        self.port = free_port()
        self.certificate = tls
        self.tls = tls.client_context() if tls else None

        self.layer = oci.deterministic_bytes("fault/img layer", LAYER_SIZE)
        self.layer_digest = oci.sha256_digest(self.layer)
        self.wrong_layer = oci.deterministic_bytes("fault/img wrong bytes", LAYER_SIZE)
        spec = oci.ImageConfigSpec(title="img", version=TAG, description="fault injection")
        self.config = oci.image_config(spec, [self.layer_digest], ["COPY payload /"])
        self.config_digest = oci.sha256_digest(self.config)
        self.manifest = oci.image_manifest(
            oci.OCI_MANIFEST,
            oci.descriptor_for(oci.OCI_CONFIG, self.config),
            [oci.descriptor(oci.OCI_LAYER_TAR, self.layer_digest, LAYER_SIZE)],
        )
        self.manifest_digest = oci.sha256_digest(self.manifest)

        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._transfers: list[LayerTransfer] = []
        self._faults_served = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._released: asyncio.Event | None = None

    # --- public state ---------------------------------------------------------------------

    @property
    def layer_size(self) -> int:
        return LAYER_SIZE

    @property
    def layer_path(self) -> str:
        return f"/v2/{REPOSITORY}/blobs/{self.layer_digest}"

    @property
    def counts(self) -> dict[tuple[str, str], int]:
        """A snapshot of ``(method, path) -> requests received``."""
        with self._lock:
            return dict(self._counts)

    @property
    def layer_transfers(self) -> list[LayerTransfer]:
        """Every layer GET so far, oldest first: its Range header and the bytes sent."""
        with self._lock:
            return [dataclasses.replace(transfer) for transfer in self._transfers]

    def count(self, method: str | None = None, path_contains: str | None = None) -> int:
        """Requests received that match the optional method and path substring."""
        return sum(
            n
            for (m, path), n in self.counts.items()
            if (method is None or m == method) and (path_contains is None or path_contains in path)
        )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> "FaultyUpstream":
        """Start the server thread and return once the port is listening."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="faulty-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10) or failure:
            raise RuntimeError(f"faulty upstream failed to start: {failure}")
        return self

    async def _serve(self) -> None:
        self._released = asyncio.Event()
        app = web.Application(middlewares=[self._count_middleware])
        app.router.add_get("/v2/", self._handle_ping)
        app.router.add_get("/v2/{name:.+}/manifests/{reference}", self._handle_manifest)
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self._handle_blob)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        server_tls = self.certificate.server_context() if self.certificate else None
        await web.TCPSite(self._runner, LOOPBACK, self.port, ssl_context=server_tls).start()

    def stop(self) -> None:
        """Release hanging requests, shut the server down and join the thread."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._released is not None:
            loop.call_soon_threadsafe(self._released.set)
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()

    def __enter__(self) -> "FaultyUpstream":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- handlers -------------------------------------------------------------------------

    @web.middleware
    async def _count_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        with self._lock:
            self._counts[(request.method, request.path)] += 1
        return await handler(request)

    async def _handle_ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _handle_manifest(self, request: web.Request) -> web.Response:
        name, reference = request.match_info["name"], request.match_info["reference"]
        if name != REPOSITORY or reference not in (TAG, self.manifest_digest):
            body = _error_body("MANIFEST_UNKNOWN", "manifest unknown")
            return web.json_response(body, status=404)
        return web.Response(
            body=self.manifest,
            headers={
                "Content-Type": oci.OCI_MANIFEST,
                "Docker-Content-Digest": self.manifest_digest,
                "ETag": f'"{self.manifest_digest}"',
            },
        )

    async def _handle_blob(self, request: web.Request) -> web.StreamResponse:
        name, digest = request.match_info["name"], request.match_info["digest"]
        if name == REPOSITORY and digest == self.config_digest:
            return self._blob_response(request, self.config, digest)
        if name != REPOSITORY or digest != self.layer_digest:
            return web.json_response(_error_body("BLOB_UNKNOWN", "blob unknown"), status=404)
        mode = self._effective_mode(request.method)
        if mode == "hang":
            return await self._hang(request)
        if mode in ("status500", "status429"):
            return self._error_status(mode)
        if request.method == "HEAD":
            return self._blob_response(request, self.layer, digest)
        transfer = LayerTransfer(request.headers.get("Range"))
        with self._lock:
            self._transfers.append(transfer)
        if mode == "ok":
            response = self._blob_response(request, self.layer, digest)
        elif mode == "wrong_digest":
            response = self._blob_response(request, self.wrong_layer, digest)
        else:
            return await self._broken_stream(request, mode, transfer)
        with self._lock:
            transfer.sent = response.content_length or 0
        return response

    def _effective_mode(self, method: str) -> FaultMode:
        """The mode for this request, taking ``fail_times`` into account (GETs only)."""
        mode = self.mode
        if mode == "ok" or method != "GET" or self.fail_times is None:
            return mode
        with self._lock:
            if self._faults_served >= self.fail_times:
                return "ok"
            self._faults_served += 1
        return mode

    def _blob_response(self, request: web.Request, data: bytes, digest: str) -> web.Response:
        headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "Accept-Ranges": "bytes",
        }
        byte_range = self._range(request, len(data))
        if byte_range is None:
            return web.Response(body=data, headers=headers)
        start, end = byte_range
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return web.Response(status=206, body=data[start : end + 1], headers=headers)

    def _range(self, request: web.Request, size: int) -> tuple[int, int] | None:
        if self.ignore_range:
            return None
        return _parse_range(request.headers.get("Range"), size)

    @staticmethod
    def _error_status(mode: FaultMode) -> web.Response:
        if mode == "status429":
            return web.json_response(
                _error_body("TOOMANYREQUESTS", "too many requests"),
                status=429,
                headers={"Retry-After": "1"},
            )
        return web.json_response(_error_body("UNKNOWN", "injected failure"), status=500)

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        assert self._released is not None
        await self._released.wait()
        _abort(request)
        return web.Response()  # never reaches the client: the connection is gone

    async def _broken_stream(
        self, request: web.Request, mode: FaultMode, transfer: LayerTransfer
    ) -> web.StreamResponse:
        """Start a full-length 200 (a 206 for a slow Range) and break it as ``mode`` says."""
        byte_range = self._range(request, LAYER_SIZE) if mode == "slow" else None
        start, end = byte_range or (0, LAYER_SIZE - 1)
        response = web.StreamResponse(
            status=200 if byte_range is None else 206,
            headers={
                "Content-Type": "application/octet-stream",
                "Docker-Content-Digest": self.layer_digest,
            },  # fmt: skip
        )
        if byte_range is not None:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{LAYER_SIZE}"
        response.content_length = end + 1 - start
        await response.prepare(request)
        try:
            if mode == "slow":
                await self._drip(response, start, end + 1, transfer)
            elif mode == "truncated":
                await self._send(response, self.layer[: LAYER_SIZE // 2], transfer)
                assert request.transport is not None
                request.transport.close()  # flush what was written, then FIN
            elif mode == "reset":
                await self._send(response, self.layer[: LAYER_SIZE // 4], transfer)
                await asyncio.sleep(0.1)  # let the bytes reach the client before the RST
                _abort(request)
            elif mode == "stall":
                await response.write(self.layer[: LAYER_SIZE // 4])
                assert self._released is not None
                await self._released.wait()
                _abort(request)
        except ConnectionError:
            pass  # the client gave up first; nothing left to break
        return response

    async def _drip(
        self, response: web.StreamResponse, start: int, stop: int, transfer: LayerTransfer
    ) -> None:
        assert self._released is not None
        for offset in range(start, stop, self.slow_chunk):
            if self._released.is_set():
                return
            await self._send(
                response, self.layer[offset : min(offset + self.slow_chunk, stop)], transfer
            )
            await asyncio.sleep(self.slow_interval)

    async def _send(
        self, response: web.StreamResponse, data: bytes, transfer: LayerTransfer
    ) -> None:
        await response.write(data)
        with self._lock:
            transfer.sent += len(data)


def _abort(request: web.Request) -> None:
    """Drop the connection with a TCP RST instead of an orderly close."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` -> inclusive ``(a, b)``; ``None`` for no or
    unsupported ranges (the caller then sends the whole body)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start, end = int(first), int(last) if last else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)
