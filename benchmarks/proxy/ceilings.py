"""What this machine allows, printed as info rows: one core of sha256, and writing the big
layer's size (write + fsync) to the filesystem that holds the proxy caches, in MiB/s and in
CPU seconds per GiB. Any cache that verifies and stores what it serves pays at least these
costs."""

from __future__ import annotations

import hashlib
import os
import time

from benchmarks.harness import GIB, MIB, log
from benchmarks.proxy.cpu import sha256_cpu_per_gib
from benchmarks.proxy.report import Metric
from benchmarks.proxy.seed import random_stream
from benchmarks.proxy.session import Session


def measure(session: Session) -> None:
    data = random_stream()(8 * MIB)
    digest = hashlib.sha256()
    started = time.perf_counter()
    for _ in range(64):
        digest.update(data)
    sha_speed = 512 / (time.perf_counter() - started)
    target = session.cache_parent / "write-ceiling.bin"
    size = session.big_size
    write_speeds, write_cpu = [], []
    for _ in range(2):  # best of two: this VM's disk speed swings a lot
        started = time.perf_counter()
        cpu_started = time.thread_time()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            left = size
            while left:
                left -= os.write(fd, data[: min(len(data), left)])
            write_cpu.append((time.thread_time() - cpu_started) * GIB / size)
            os.fsync(fd)
        finally:
            os.close(fd)
            target.unlink()
        write_speeds.append(size / MIB / (time.perf_counter() - started))
    write_speed = max(write_speeds)
    sha_cpu = sha256_cpu_per_gib()
    log(
        f"machine: sha256 {sha_speed:,.0f} MiB/s on one core ({sha_cpu:.2f} CPU-s/GiB); "
        f"write+fsync of {size // MIB} MiB to {session.cache_parent}: "
        + ", ".join(f"{speed:,.0f}" for speed in write_speeds)
        + " MiB/s, the writes "
        + ", ".join(f"{cpu:.2f}" for cpu in write_cpu)
        + " CPU-s/GiB"
    )
    session.metrics += [
        Metric("ceiling_sha256_one_core", sha_speed, "MiB/s", notes="hashlib, 8 MiB updates"),
        Metric("ceiling_sha256_cpu", sha_cpu, "CPU-s/GiB", notes="hashlib, 8 MiB updates"),
        Metric(
            "ceiling_cache_fs_write_cpu",
            write_cpu[0],
            "CPU-s/GiB",
            notes="write(2) of a new file, before fsync; the second write: "
            f"{write_cpu[1]:.2f} (its pages were just freed by the first)",
        ),
        Metric(
            f"ceiling_cache_fs_write_fsync_{size // MIB}M",
            write_speed,
            "MiB/s",
            notes=f"best of 2, new file in {session.cache_parent}",
        ),
    ]
