"""SIF conversion benchmark: the mirror's converter next to the path Apptainer takes
(`umoci unpack` then `mksquashfs`), on the same image, machine and run.

The image: about `--size-mib` MiB of root filesystem in three gzip layers: files taken
from this machine's /usr/share (tens of thousands of small ones), libraries from /usr/lib,
and a few large files. It is put into a content store (for the converter) and an OCI
layout sharing the same blob files (for umoci). Both sides compress with gzip at level 9
(the default of tar2sqfs and of mksquashfs), 128 KiB blocks, every core, at nice 10 (the
converter's own priority). Measured per side: wall time, CPU time of every process,
peak temporary disk (bytes on disk in its work directory beyond the finished file),
peak RSS (the sum over its processes, sampled every 50 ms).

    .venv/bin/python benchmarks/bench_sif.py --rounds 3      # ~1 GiB, ~15 minutes
    .venv/bin/python benchmarks/bench_sif.py --size-mib 200  # smoke run, ~30 s
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import MIB, log, run_directory  # noqa: E402
from benchmarks.load.footprint import memory_mib  # noqa: E402
from mirror import config  # noqa: E402
from mirror.cache.store import ContentStore  # noqa: E402
from mirror.convert.converter import NICENESS, convert  # noqa: E402
from mirror.reference import Digest  # noqa: E402

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
_LARGEST_HOST_FILE = 1 << 20  # larger host files are left out: the image gets more files
TARGETS = {"wall": 2.0, "temp_disk_fraction": 0.10, "rss_mib": 300}


@dataclass
class Measured:
    wall: float
    cpu: float
    peak_temp_disk: int
    peak_rss: int
    output_size: int


# -- the image ---------------------------------------------------------------------------


def _host_files(top: Path, budget: int) -> Iterator[tuple[Path, str]]:
    """(path, name in the layer) of regular files, directories and symlinks under `top`,
    until `budget` bytes of file content."""
    used = 0
    for directory, dirs, files in os.walk(top):
        dirs.sort()
        here = Path(directory)
        yield here, str(here.relative_to("/"))
        for name in sorted(files):
            path = here / name
            try:
                info = path.lstat()
            except OSError:
                continue
            if path.is_symlink() or (path.is_file() and info.st_size <= _LARGEST_HOST_FILE):
                if used + info.st_size > budget:
                    return
                used += info.st_size if path.is_file() else 0
                yield path, str(path.relative_to("/"))


def _write_layer(store: ContentStore, workdir: Path, fill: Callable[[tarfile.TarFile], None]):
    """A gzip layer written by `fill`, moved into the store; (digest, size, diff_id)."""
    staging = workdir / "layer.tar.gz"
    with open(staging, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as zipped:
            plain = _HashingWriter(zipped)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                fill(tar)
    digest = hashlib.sha256()
    with open(staging, "rb") as done:
        for piece in iter(lambda: done.read(MIB), b""):
            digest.update(piece)
    target = store.blob_path(Digest(digest.hexdigest()))
    target.parent.mkdir(parents=True, exist_ok=True)
    size = staging.stat().st_size
    os.rename(staging, target)
    return f"sha256:{digest.hexdigest()}", size, f"sha256:{plain.hash.hexdigest()}"


class _HashingWriter:
    def __init__(self, target) -> None:
        self.target, self.hash = target, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self.target.write(data)


def build_image(store: ContentStore, workdir: Path, size: int) -> Digest:
    """Three layers (host /usr/share, host /usr/lib, three large files); the manifest."""

    def add_tree(top: Path, budget: int) -> Callable[[tarfile.TarFile], None]:
        def fill(tar: tarfile.TarFile) -> None:
            for path, name in _host_files(top, budget):
                tar.add(path, arcname=name, recursive=False)

        return fill

    def add_large(tar: tarfile.TarFile) -> None:
        sources = [p for p, _ in _host_files(Path("/usr/lib"), size // 4) if p.is_file()]
        for number in range(3):
            info = tarfile.TarInfo(f"opt/large/blob{number}.bin")
            info.size = size // 12
            tar.addfile(info, _Concatenated(sources[number:], info.size))

    layers = [
        _write_layer(store, workdir, add_tree(Path("/usr/share"), size * 50 // 100)),
        _write_layer(store, workdir, add_tree(Path("/usr/lib"), size * 25 // 100)),
        _write_layer(store, workdir, add_large),
    ]
    image_config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff for _, _, diff in layers]},
        }
    ).encode()
    config_digest = _put(store, image_config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": str(config_digest),
                "size": len(image_config),
            },
            "layers": [
                {"mediaType": LAYER_TYPE, "digest": digest, "size": size}
                for digest, size, _ in layers
            ],
        }
    ).encode()
    return _put(store, manifest)


class _Concatenated:
    """`size` bytes read from host files one after the other (real, compressible data)."""

    def __init__(self, sources: list[Path], size: int) -> None:
        self.left = size
        self.files = (p.read_bytes() for p in itertools.cycle(sources))
        self.pending = b""

    def read(self, count: int = -1) -> bytes:
        count = self.left if count < 0 else min(count, self.left)
        while len(self.pending) < count:
            self.pending += next(self.files)
        data, self.pending = self.pending[:count], self.pending[count:]
        self.left -= len(data)
        return data


def _put(store: ContentStore, data: bytes) -> Digest:
    digest = Digest(hashlib.sha256(data).hexdigest())
    store.put_bytes(digest, data)
    return digest


def oci_layout(store: ContentStore, manifest: Digest, layout: Path) -> str:
    """An OCI layout whose blobs are hard links to the store's files."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    document = json.loads(store.read_blob(manifest) or b"{}")
    for digest in [
        manifest,
        document["config"]["digest"],
        *(d["digest"] for d in document["layers"]),
    ]:
        parsed = Digest.parse(str(digest))
        os.link(store.blob_path(parsed), blobs / parsed.hex)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    size = store.blob_size(manifest)
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": str(manifest),
                        "size": size,
                        "annotations": {"org.opencontainers.image.ref.name": "bench"},
                    }
                ],
            }
        )
    )
    return f"{layout}:bench"


# -- measuring ---------------------------------------------------------------------------


class _Watch:
    """Samples, every 50 ms, the summed RSS of this process's descendants and, with
    `directory`, the bytes on disk under it (a directory of a few files: walking a whole
    unpacked tree that often would take the CPU the measured side needs)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.peak_rss = 0
        self.peak_disk = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            rss = sum((memory_mib(pid) or (0.0, 0.0))[0] for pid in _descendants(os.getpid()))
            self.peak_rss = max(self.peak_rss, int(rss * MIB))
            if self.directory is not None:
                self.peak_disk = max(self.peak_disk, _disk_usage(self.directory))


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    for child in children.read().split():
                        found.append(int(child))
                        pending.append(int(child))
        except OSError:
            continue
    return found


def _disk_usage(directory: Path) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(work: Callable[[], Path], directory: Path, *, sample_disk: bool) -> Measured:
    """Run `work` (it returns its output file); without `sample_disk` the peak of the
    temporary disk is what is under `directory` when `work` returns (the unpacked tree
    stays there while mksquashfs reads it)."""
    directory.mkdir(parents=True, exist_ok=True)
    cpu_before, started = _children_cpu(), time.monotonic()
    with _Watch(directory if sample_disk else None) as watch:
        output = work()
    wall, cpu = time.monotonic() - started, _children_cpu() - cpu_before
    final = output.stat().st_blocks * 512
    peak = watch.peak_disk if sample_disk else _disk_usage(directory)
    return Measured(wall, cpu, max(0, peak - final), watch.peak_rss, output.stat().st_size)


def run_converter(store: ContentStore, manifest: Digest, out_dir: Path) -> Measured:
    sif_config = config.load().sif
    out = out_dir / "image.sif"
    return measure(
        lambda: convert(store, manifest, "bench/image:1", sif_config, out).path,
        out_dir,
        sample_disk=True,
    )


def run_baseline(layout_ref: str, work_dir: Path) -> Measured:
    nice = ["nice", "-n", str(NICENESS)]

    def work() -> Path:
        bundle, squashfs = work_dir / "bundle", work_dir / "image.squashfs"
        subprocess.run([*nice, "umoci", "unpack", "--image", layout_ref, str(bundle)], check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run(
            [*nice, "mksquashfs", str(bundle / "rootfs"), str(squashfs), "-noappend",
             "-comp", "gzip", "-Xcompression-level", "9", "-b", "131072",
             "-processors", str(os.cpu_count() or 1), "-quiet", "-no-progress"],
            check=True, capture_output=True,
        )  # fmt: skip
        return squashfs

    return measure(work, work_dir, sample_disk=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="root filesystem size")
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs, order alternating")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the run's temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the run's temp dir")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    ours: list[Measured] = []
    theirs: list[Measured] = []
    with run_directory(args.workdir, "hpc-mirror-bench-sif-", args.keep) as workdir:
        store = ContentStore(workdir / "cache")
        log(f"building a ~{args.size_mib} MiB image from host files")
        manifest = build_image(store, workdir, args.size_mib * MIB)
        layout_ref = oci_layout(store, manifest, workdir / "layout")
        rootfs = files = 0
        for number in range(args.rounds):
            sides = [("converter", ours), ("baseline", theirs)]
            for side, results in sides if number % 2 == 0 else sides[::-1]:
                out = workdir / f"{side}-{number}"
                log(f"round {number + 1}: {side}")
                if side == "converter":
                    results.append(run_converter(store, manifest, out))
                else:
                    results.append(run_baseline(layout_ref, out))
                    rootfs = _disk_usage(out / "bundle" / "rootfs")
                    files = sum(len(f) for _, _, f in os.walk(out / "bundle" / "rootfs"))
                shutil.rmtree(out)
    return report(ours, theirs, rootfs, files, args.json)


def report(
    ours: list[Measured], theirs: list[Measured], rootfs: int, files: int, json_path: Path | None
) -> int:
    """Medians over the rounds (with the range when there are several), ratios of medians."""
    rows = [
        ("wall s", "wall", 1),
        ("CPU s", "cpu", 1),
        ("peak temp disk MiB", "peak_temp_disk", MIB),
        ("peak RSS MiB", "peak_rss", MIB),
        ("output MiB", "output_size", MIB),
    ]
    print(f"\nrootfs: {rootfs / MIB:.0f} MiB on disk, {files} files, {len(ours)} round(s)")
    print(f"{'':20}{'converter':>22}{'umoci+mksquashfs':>26}{'ratio':>8}")
    medians = {}
    for name, key, unit in rows:
        mine = [getattr(m, key) / unit for m in ours]
        base = [getattr(m, key) / unit for m in theirs]
        medians[key] = (statistics.median(mine), statistics.median(base))
        ratio = medians[key][1] / medians[key][0] if medians[key][0] else float("inf")
        print(f"{name:20}{_spread(mine):>22}{_spread(base):>26}{ratio:8.2f}")
    checks = {
        "wall >= 2x faster": medians["wall"][1] / medians["wall"][0] >= TARGETS["wall"],
        "temp disk <= 10% of rootfs": max(m.peak_temp_disk for m in ours)
        <= TARGETS["temp_disk_fraction"] * rootfs,
        "RSS <= 300 MiB": max(m.peak_rss for m in ours) <= TARGETS["rss_mib"] * MIB,
    }
    for name, met in checks.items():
        print(f"target {name}: {'met' if met else 'NOT met'}")
    if json_path is not None:
        json_path.write_text(
            json.dumps(
                {"rootfs_bytes": rootfs, "files": files, "converter": [m.__dict__ for m in ours],
                 "baseline": [m.__dict__ for m in theirs], "targets": checks}, indent=2,
            )
        )  # fmt: skip
    return 0


def _spread(values: list[float]) -> str:
    middle = f"{statistics.median(values):.1f}"
    return middle if len(values) == 1 else f"{middle} ({min(values):.1f}-{max(values):.1f})"


if __name__ == "__main__":
    sys.exit(main())
