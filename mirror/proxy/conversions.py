"""Conversions of cached images into SIF files: one per image across every instance.

A conversion is keyed by the converter's version and the source image's (one platform's)
manifest digest. Its source is first cached through the service as a pull would cache it;
then the instance claims the conversion in the store (the exclusive claim file blob fills
use), touches the claim while it converts, stores the SIF, its `{}` config and its ORAS
manifest like any content, and records which SIF manifest the image became. Other
instances wait for that record, and take the conversion over when the claim's heartbeat
stops. At most `[sif] max_parallel` conversions run at once here, each in a worker thread
(the converter's own processes run at low CPU priority), so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from mirror.convert.converter import convert
from mirror.convert.metadata import CONVERTER_VERSION
from mirror.errors import (
    ConversionCancelled,
    ConversionPending,
    ConversionRefused,
    MirrorError,
    StoreRefused,
)
from mirror.manifests import parse
from mirror.metrics import series
from mirror.proxy.blob_fills import heartbeat
from mirror.proxy.image_walk import cache_image
from mirror.proxy.service import ProxyService
from mirror.proxy.sif_artifact import EMPTY_CONFIG, EMPTY_CONFIG_DIGEST, sif_manifest
from mirror.reference import Digest, Repository

log = logging.getLogger(__name__)

# A refused image is not converted again for this long (the refusal is in the store, so
# for every instance): each pull of it gets the same error at once instead of a new try.
REFUSAL_MEMORY_SECONDS = 600.0
_FOLLOW_POLL_SECONDS = 0.25


class Conversions:
    """Starts, joins and waits for conversions; owned by the SIF namespace's server."""

    def __init__(self, service: ProxyService) -> None:
        self._service = service
        self._store = service.store
        self._config = service.config
        self._slots = asyncio.Semaphore(self._config.sif.max_parallel)
        self._executor = ThreadPoolExecutor(
            max_workers=self._config.sif.max_parallel, thread_name_prefix="mirror-convert"
        )
        self._running: dict[str, asyncio.Task[Digest]] = {}  # by source manifest hex
        self._stopping = threading.Event()  # cancels the converters still running

    async def close(self) -> None:
        """Stop the conversions still running (their claims are released, so another
        instance may take them); wait for them to end."""
        self._stopping.set()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def converted(self, source: Digest) -> Digest | None:
        """The SIF manifest image manifest `source` was converted to, if the store still
        holds it whole (gc may have evicted it since)."""
        manifest = self._store.read_conversion(CONVERTER_VERSION, source)
        body = self._store.read_blob(manifest) if manifest is not None else None
        if body is None:
            return None
        held = parse(body, "").blob_digests
        if not held or any(self._store.blob_size(blob) is None for blob in held):
            return None
        return manifest

    async def sif_manifest(
        self, source: Repository, image: Digest, describe: str, wait: float | None
    ) -> Digest:
        """The SIF manifest of `source`'s image manifest `image`: as recorded, else after
        converting it (here or on another instance). Waits at most `wait` seconds (None:
        until done), then raises `ConversionPending`; the conversion goes on."""
        done = self.converted(image)
        if done is not None:
            return done
        self._raise_if_refused(image)
        task = self._running.get(image.hex)
        if task is None:
            task = asyncio.ensure_future(self._produce(source, image))
            self._running[image.hex] = task
            task.add_done_callback(lambda done: self._finished(source, image, done))
        else:
            series.CONVERSIONS.labels(series.JOINED).inc()
        try:
            return await asyncio.wait_for(asyncio.shield(task), wait)
        except asyncio.TimeoutError:
            raise ConversionPending(
                f"{describe} is being converted to a SIF; retry in a while"
            ) from None

    def _finished(self, source: Repository, image: Digest, task: asyncio.Task) -> None:
        """Forget a conversion that ended; say why one failed (no client may be waiting
        for it any more: each got 503 after `max_wait_seconds`)."""
        self._running.pop(image.hex, None)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, MirrorError):
            # A refusal, a cancellation or a full store is logged where it happens.
            if not isinstance(error, (ConversionRefused, ConversionCancelled, StoreRefused)):
                log.warning("the conversion of %s@%s failed: %s", source, image, error.message)
        elif error is not None:
            log.error("the conversion of %s@%s failed", source, image, exc_info=error)

    def _raise_if_refused(self, image: Digest) -> None:
        refusal = self._store.read_conversion_refusal(CONVERTER_VERSION, image)
        if refusal is not None and time.time() - refusal[1] < REFUSAL_MEMORY_SECONDS:
            raise ConversionRefused(refusal[0])

    async def _produce(self, source: Repository, image: Digest) -> Digest:
        """Cache the source image, then convert it once for every instance: claim it, or
        wait for the instance that did, taking over should it stop."""
        manifest = await cache_image(self._service, source, str(image), count_pull=False)
        if self._store.blob_size(image) is None:  # served from memory, evicted from the store
            with self._store.refusals.raising(f"the manifest {image}"):
                self._store.put_bytes(image, manifest.body)
        joining = True  # counted once, should another instance be converting it
        while True:
            async with self._slots:
                done = self.converted(image)
                if done is not None:
                    return done
                self._raise_if_refused(image)
                with self._store.refusals.raising(f"the conversion of {source}@{image}"):
                    claim = self._store.claim_conversion(CONVERTER_VERSION, image)
                if claim is not None:
                    try:
                        async with heartbeat([claim], self._config.cache):
                            return await asyncio.get_running_loop().run_in_executor(
                                self._executor, self._convert, source, image
                            )
                    finally:
                        self._store.release_conversion(CONVERTER_VERSION, image)
            joining = await self._follow(source, image, joining)

    async def _follow(self, source: Repository, image: Digest, joining: bool) -> bool:
        """Wait while another instance converts `image`; return when it recorded the SIF,
        gave up (its claim is gone), or stopped touching its claim (broken here). The
        first wait of a pull counts it as joined; whether it still has to count."""
        stale = self._config.cache.fill_stale_seconds
        while self._store.conversion_claimed(CONVERTER_VERSION, image):
            if joining:
                series.CONVERSIONS.labels(series.JOINED).inc()
                joining = False
            if self.converted(image) is not None:
                return joining
            if self._store.break_stale_conversion_claim(CONVERTER_VERSION, image, stale):
                log.warning(
                    "taking over the conversion of %s@%s from an instance that stopped",
                    source,
                    image,
                )
                return joining
            await asyncio.sleep(_FOLLOW_POLL_SECONDS)
        return joining

    def _convert(self, source: Repository, image: Digest) -> Digest:
        """`_convert_and_store`, counted in /metrics: running now, then its outcome and
        how long it took (blocking)."""
        started = time.monotonic()
        outcome = series.FAILED
        series.CONVERSIONS_IN_FLIGHT.inc()
        try:
            manifest = self._convert_and_store(source, image, started)
            outcome = series.CONVERTED
            return manifest
        except ConversionRefused:
            outcome = series.REFUSED
            raise
        finally:
            series.CONVERSIONS_IN_FLIGHT.dec()
            series.CONVERSIONS.labels(outcome).inc()
            series.CONVERSION_SECONDS.labels(outcome).observe(time.monotonic() - started)

    def _convert_and_store(self, source: Repository, image: Digest, started: float) -> Digest:
        """Convert, store the SIF, its config and manifest, then record it (blocking)."""
        reference = f"{source}@{image}"
        log.info("converting %s to a SIF", reference)
        output = self._store.conversion_output_path(CONVERTER_VERSION, image)
        try:
            with self._store.refusals.raising(f"the conversion of {reference}"):
                sif = convert(
                    self._store,
                    image,
                    reference,
                    self._config.sif,
                    output,
                    cancel=self._stopping,
                )
                title = f"{source.name.rsplit('/', 1)[-1]}_{image.hex[:12]}.sif"
                body = sif_manifest(sif.digest, sif.size, title)
                manifest = Digest(hashlib.sha256(body).hexdigest())
                if self._store.put_file(sif.digest, sif.path):
                    self._service.usage.added(sif.digest, sif.size)
                for digest, content in ((EMPTY_CONFIG_DIGEST, EMPTY_CONFIG), (manifest, body)):
                    if self._store.put_bytes(digest, content):
                        self._service.usage.added(digest, len(content))
                self._store.write_conversion(CONVERTER_VERSION, image, manifest)
        except ConversionRefused as exc:
            log.warning("refused to convert %s: %s", reference, exc.message)
            self._store.write_conversion_refusal(CONVERTER_VERSION, image, exc.message)
            raise
        except StoreRefused:
            output.unlink(missing_ok=True)
            raise
        log.info(
            "converted %s to the SIF %s (%d bytes, %s) in %.1f s",
            reference,
            sif.digest,
            sif.size,
            sif.arch,
            time.monotonic() - started,
        )
        return manifest
