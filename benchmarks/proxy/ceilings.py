"""What this machine allows, printed as info rows: one core of sha256, writing the big
layer's size (write + fsync) to the filesystem that holds the proxy caches, in MiB/s and in
CPU seconds per GiB, and the least a cold fill costs (receive + write + sha256 in one
thread). Any cache that verifies and stores what it serves pays at least these costs."""

from __future__ import annotations

import hashlib
import os
import time

from benchmarks.harness import GIB, MIB, BenchError, log
from benchmarks.proxy.clients import socket_get
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


def fill_floor(session: Session) -> None:
    """One thread GETs the big layer straight from the upstream (recv_into a 4 MiB buffer),
    writes it to a new file on the cache filesystem and hashes it: a cold fill without
    a client or an event loop. Twice; what the first write finds in memory differs."""
    image = session.big
    target = session.cache_parent / "fill-floor.bin"
    costs = []
    for _ in range(2):
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            started = time.thread_time()
            fetch = socket_get(
                session.upstream.port, image.blob_path(), hash_body=True, write_to=fd
            )
            costs.append((time.thread_time() - started) * GIB / image.layer_size)
        finally:
            os.close(fd)
            target.unlink()
        if fetch.error or fetch.sha256 != image.layer_hex:
            raise BenchError(f"fill floor: GET of the big layer failed: {fetch.error}")
    log(
        "floor of a cold fill (receive + write + sha256, one thread, no client): "
        + ", ".join(f"{cost:.2f}" for cost in costs)
        + " CPU-s/GiB"
    )
    session.metrics.append(
        Metric(
            "ceiling_fill_floor_cpu",
            min(costs),
            "CPU-s/GiB",
            notes="recv_into + write + sha256 of the big layer, one thread, no client; "
            "best of " + "/".join(f"{cost:.2f}" for cost in costs),
        )
    )
