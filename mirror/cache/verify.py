"""`mirror verify`: re-hash every blob in the store and quarantine the corrupt ones.

A blob is immutable once renamed into place, so a mismatch means the filesystem or
someone with write access damaged it. A corrupt blob is moved out of service into the
store's quarantine (one rename on the same filesystem): it is no longer served, the next
pull fetches a good copy from the upstream, and the bad bytes stay for inspection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mirror.cache.store import ContentStore, StoredBlob

_CHUNK = 4 * 1024 * 1024


@dataclass
class VerifyReport:
    checked: int = 0
    bytes_checked: int = 0
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (digest, actual)


def verify_store(
    store: ContentStore, progress: Callable[[int], None] | None = None, workers: int = 2
) -> VerifyReport:
    """Hash every blob (sha256 releases the GIL: `workers` threads use as many cores)."""
    report = VerifyReport()
    advance = progress or (lambda done: None)

    def check(blob: StoredBlob) -> tuple[StoredBlob, str]:
        hasher = hashlib.sha256()
        with open(store.blob_path(blob.digest), "rb") as content:
            while chunk := content.read(_CHUNK):
                hasher.update(chunk)
                advance(len(chunk))
        return blob, hasher.hexdigest()

    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        for blob, actual in pool.map(check, store.blobs()):
            report.checked += 1
            report.bytes_checked += blob.size
            if actual != blob.digest.hex:
                store.quarantine_blob(blob.digest)
                report.corrupt.append((str(blob.digest), f"sha256:{actual}"))
    return report
