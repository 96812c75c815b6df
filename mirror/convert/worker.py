"""The child process that writes an image's merged root filesystem as a tar stream on its
stdout (`python -m mirror.convert.worker '<job JSON>'`), piped into tar2sqfs.

A process of its own, at low CPU priority: the merge's Python work never holds the
server's GIL, its memory is returned when it exits, and cancelling is a kill. It reports
on stderr, one JSON object a line: {"warning": ...} for what it leaves out, then
{"done": {...}} or {"error": ...} (exit 2); exit 3 when its reader went away.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from mirror.cache.store import ContentStore
from mirror.convert.image import load_image
from mirror.convert.stream import write_rootfs_tar
from mirror.errors import ConversionRefused
from mirror.reference import Digest

EXIT_REFUSED, EXIT_READER_GONE = 2, 3


class _JsonLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _report({"warning": record.getMessage()})


def _report(message: dict) -> None:
    sys.stderr.write(json.dumps(message) + "\n")
    sys.stderr.flush()


def job(store_root: Path, manifest_digest: Digest, reference: str, max_rootfs_bytes: int) -> str:
    """The command-line argument that asks a worker for one image."""
    return json.dumps(
        {
            "store": str(store_root),
            "manifest": str(manifest_digest),
            "reference": reference,
            "max_rootfs_bytes": max_rootfs_bytes,
        }
    )


def main(argument: str) -> int:
    request = json.loads(argument)
    logging.getLogger("mirror.convert").addHandler(_JsonLines())
    out = sys.stdout.buffer
    try:
        store = ContentStore(Path(request["store"]), create=False)
        image = load_image(store, Digest.parse(request["manifest"]), request["reference"])
        plan = write_rootfs_tar(image, int(request["max_rootfs_bytes"]), out)
    except ConversionRefused as exc:
        _report({"error": exc.message})
        return EXIT_REFUSED
    except BrokenPipeError:
        return EXIT_READER_GONE
    _report(
        {
            "done": {
                "entries": plan.entries,
                "rootfs_bytes": plan.rootfs_bytes,
                "dropped": len(plan.dropped),
            }
        }
    )
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1])
    if code == EXIT_READER_GONE:  # what is still buffered cannot be written: drop it quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)
