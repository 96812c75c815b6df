"""Convert one cached OCI image into a SIF file: the library's entry point.

Two child processes at low CPU priority do the work: the worker (`mirror.convert.worker`)
writes the merged root filesystem as a tar stream into `tar2sqfs` (squashfs-tools-ng),
which writes the squashfs at `out_path`; then the SIF's header, descriptors, definition
file and JSON objects are put in front of it. Nothing is unpacked on disk. The same source
manifest and converter version give the same bytes: every time is fixed and the SIF's id
is derived from the source manifest digest.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mirror.cache.refusals import is_refusal
from mirror.cache.store import ContentStore
from mirror.config import SifConfig
from mirror.convert import metadata, worker
from mirror.convert.image import SourceImage, load_image
from mirror.convert.sif_file import put_in_front, sha256_and_sync
from mirror.errors import ConversionCancelled, ConversionFailed, ConversionRefused, StoreRefused
from mirror.reference import Digest
from mirror.sif.writer import DEFINITION_FILE, GENERIC_JSON, SifObject, sif_prefix

log = logging.getLogger(__name__)

NICENESS = 10  # conversions yield the CPU to the proxy's own work
_POLL_SECONDS = 0.1
_NEARLY_FULL = 1 << 20  # free bytes below which a failed write is taken for a full disk
_IMPLICIT_DIRS = "mode=0755,uid=0,gid=0,mtime=0"  # directories no layer entry describes
_ID_NAMESPACE = uuid.UUID("6f1d3a52-5e8c-4c1b-9a57-2b7d0c3e9f41")


@dataclass(frozen=True, slots=True)
class ConvertedSif:
    """A finished SIF file at `path` (fsync'd), and what it was made from."""

    path: Path
    digest: Digest  # sha256 of the whole file: the ORAS layer digest
    size: int
    arch: str  # Go name of the partition's architecture ("amd64"), "unknown" if none
    source_digest: Digest  # the image manifest converted
    source_reference: str
    converter_version: str
    rootfs_bytes: int  # content bytes of the final root filesystem, each file once
    entries: int  # paths in it, the runtime tree included
    dropped_devices: int  # device nodes left out


def convert(
    store: ContentStore,
    manifest_digest: Digest,
    source_reference: str,
    config: SifConfig,
    out_path: Path,
    *,
    cancel: threading.Event | None = None,
) -> ConvertedSif:
    """Build the SIF of the image manifest `manifest_digest` (one platform's, cached in
    `store` with its config and layers) at `out_path`, which must not exist; put it on the
    store's filesystem (e.g. `store.temp_path(...)`) so it can be renamed into place.

    Blocks until done (run it in a thread or executor); setting `cancel` stops it within a
    fraction of a second. On any failure nothing is left at `out_path`. Raises
    ConversionRefused (the image cannot be converted; the message names image and layer;
    the same image is refused again), BlobUnknown (a piece is not cached yet),
    ConversionCancelled, StoreRefused (the filesystem refused a write), ConversionFailed
    (a tool failed), FileExistsError (`out_path` exists).
    """
    if os.path.lexists(out_path):
        raise FileExistsError(errno.EEXIST, "the conversion's output exists already", str(out_path))
    image = load_image(store, manifest_digest, source_reference)
    arch = metadata.sif_arch(image)
    try:
        report = _squash(store, image, config, out_path, cancel)
        layout = sif_prefix(
            _objects(image), out_path.stat().st_size, arch, _image_id(manifest_digest)
        )
        put_in_front(out_path, layout.prefix)
        hex_digest, size = sha256_and_sync(out_path)
    except OSError as exc:
        _remove(out_path)
        if is_refusal(exc):
            raise StoreRefused(exc) from None
        raise
    except BaseException:
        _remove(out_path)
        raise
    return ConvertedSif(
        path=out_path,
        digest=Digest(hex_digest),
        size=size,
        arch=arch,
        source_digest=manifest_digest,
        source_reference=source_reference,
        converter_version=metadata.CONVERTER_VERSION,
        rootfs_bytes=report.get("rootfs_bytes", 0),
        entries=report.get("entries", 0),
        dropped_devices=report.get("dropped", 0),
    )


def _objects(image: SourceImage) -> list[SifObject]:
    """The definition file, then the JSON objects sorted by name, as Apptainer writes."""
    found = metadata.labels(image, metadata.sif_arch(image))
    return [
        SifObject(DEFINITION_FILE, "", metadata.definition(image).encode()),
        SifObject(GENERIC_JSON, "inspect-metadata.json", metadata.inspect_metadata(image, found)),
        SifObject(GENERIC_JSON, "oci-config.json", metadata.oci_config(image)),
    ]


def _image_id(manifest_digest: Digest) -> uuid.UUID:
    return uuid.uuid5(_ID_NAMESPACE, f"{metadata.CONVERTER_VERSION} {manifest_digest}")


def _squash(
    store: ContentStore,
    image: SourceImage,
    config: SifConfig,
    out_path: Path,
    cancel: threading.Event | None,
) -> dict:
    """Run worker | tar2sqfs until both end; the worker's final report."""
    request = worker.job(
        store.root, image.manifest_digest, image.reference, config.max_rootfs_bytes
    )
    nice = ["nice", "-n", str(NICENESS)]
    squash_command = [
        *nice,
        "tar2sqfs",
        "--quiet",
        "--no-skip",
        "--compressor",
        config.compression,
        "--num-jobs",
        str(os.cpu_count() or 1),
        "--defaults",
        _IMPLICIT_DIRS,
        str(out_path),
    ]
    with tempfile.TemporaryFile() as worker_log, tempfile.TemporaryFile() as squash_log:
        producer = subprocess.Popen(
            [*nice, sys.executable, "-m", "mirror.convert.worker", request],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=worker_log,
        )
        try:
            assert producer.stdout is not None
            with producer.stdout:
                squasher = subprocess.Popen(
                    squash_command,
                    stdin=producer.stdout,
                    stdout=subprocess.DEVNULL,
                    stderr=squash_log,
                )
            try:
                _wait(producer, squasher, cancel)
            finally:
                _stop(squasher)
        finally:
            _stop(producer)
        report = _read_report(worker_log, image)
        if producer.returncode == 0 and squasher.returncode == 0:
            return report.get("done", {})
        if "error" in report:
            raise ConversionRefused(report["error"])
        said = _tail(squash_log)
        if squasher.returncode != 0 and _out_of_space(out_path, said):
            raise StoreRefused(OSError(errno.ENOSPC, f"tar2sqfs: {said}"))
        if squasher.returncode != 0:
            raise ConversionFailed(f"{image.describe}: tar2sqfs failed: {said}")
        raise ConversionFailed(
            f"{image.describe}: the conversion worker failed: {_tail(worker_log)}"
        )


def _wait(
    producer: subprocess.Popen[bytes],
    squasher: subprocess.Popen[bytes],
    cancel: threading.Event | None,
) -> None:
    while producer.poll() is None or squasher.poll() is None:
        if cancel is not None and cancel.wait(_POLL_SECONDS):
            raise ConversionCancelled("the conversion was cancelled")
        if cancel is None:
            try:
                squasher.wait(_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass


def _out_of_space(out_path: Path, said: str) -> bool:
    """Whether tar2sqfs failed for want of space: it says "I/O error" for ENOSPC, so the
    free space left where it wrote decides."""
    if "No space left on device" in said or "Disk quota exceeded" in said:
        return True
    stats = os.statvfs(out_path.parent)
    return stats.f_bavail * stats.f_frsize < _NEARLY_FULL


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def _read_report(log_file: IO[bytes], image: SourceImage) -> dict:
    """The worker's warnings (logged here) and its last report line."""
    log_file.seek(0)
    report: dict = {}
    for line in log_file.read().decode(errors="replace").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue  # a traceback: read by _tail when the worker failed
        if not isinstance(message, dict):
            continue
        if "warning" in message:
            log.warning("%s", message["warning"])
        else:
            report = message
    return report


def _tail(log_file: IO[bytes], limit: int = 2000) -> str:
    log_file.seek(0)
    text = log_file.read().decode(errors="replace").strip()
    return text[-limit:] or "no message"


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".squashfs")):
        try:
            os.unlink(leftover)
        except FileNotFoundError:
            pass
