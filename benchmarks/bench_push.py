#!/usr/bin/env python3
"""Push benchmark: hpc-mirror's local namespace against distribution, in the same run.

What runs (children of this script, stopped by their own PID at the end): hpc-mirror with
[auth] (htpasswd, its own token realm) and [local] prefix "local"; Debian's `docker-registry`
(distribution 2.8, filesystem storage on the same disk) with token auth from an issuer in
this process. One client (a keep-alive HTTP/1.1 connection, bodies sent with sendfile) pushes
the same way to both, in alternating order each repetition:

* a 1 GiB random blob as a monolithic upload (POST, PUT ?digest=);
* the same blob in 64 MiB chunks (POST, PATCH with Content-Range per chunk, PUT ?digest=);
* an image of 1,000 small layers (4 KiB each): HEAD, POST and PUT ?digest= per blob, then
  the manifest: the per-blob cost of the protocol.

Reported: MiB/s and blobs/s (median of --reps), CPU seconds of each server per GiB (and per
blob), from /proc, and the ratio mirror/distribution (target >= 1.0). See
benchmarks/README.md.

Usage::

    .venv/bin/python benchmarks/bench_push.py [--quick] [--reps N] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import BinaryIO

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from benchmarks import watchdog  # noqa: E402
from benchmarks.harness import GIB, MIB, log, run_directory  # noqa: E402
from benchmarks.proxy import report  # noqa: E402
from benchmarks.proxy.report import Metric  # noqa: E402
from benchmarks.proxy.seed import FileBlob, random_file  # noqa: E402
from benchmarks.proxy.session import ABORTS  # noqa: E402
from benchmarks.push import scenarios  # noqa: E402
from benchmarks.push.client import PushClient  # noqa: E402
from benchmarks.push.scenarios import Push  # noqa: E402
from benchmarks.push.servers import (  # noqa: E402
    PASSWORD,
    USER,
    distribution_registry,
    mirror_registry,
    repository,
    token_issuer,
)
from tests.support.processes import ServerProcess  # noqa: E402
from tests.support.proxy import ProxyProcess  # noqa: E402

SERVERS = ("mirror", "distribution")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="256 MiB blob, 200 layers")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--chunk-mib", type=int, default=64, help="PATCH size (default 64)")
    parser.add_argument("--layers", type=int, help="small layers (default 1000, 200 quick)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--workdir", type=Path, metavar="DIR", help="parent of the temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument(
        "--profile", type=Path, metavar="PATH", help="run the mirror under cProfile, stats to PATH"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="whole-run limit, s")
    return parser.parse_args(argv)


class Run:
    """The two servers, the big file and what every push measured."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.big_size = (256 if args.quick else 1024) * MIB
        self.layers = args.layers or (200 if args.quick else 1000)
        self.pushes: dict[tuple[str, str], list[Push]] = {}
        self.servers: dict[str, ServerProcess] = {}

    def measure(self) -> None:
        issuer = token_issuer(self.workdir / "issuer").start()
        try:
            distribution = distribution_registry(self.workdir / "distribution", issuer)
            self.servers["distribution"] = distribution.start()
            mirror = mirror_registry(self.workdir / "mirror", distribution.url, self.args.profile)
            self.servers["mirror"] = mirror.start()
            log(f"mirror pid {mirror.pid}, distribution pid {distribution.pid}")
            blob = random_file(self.workdir / "big.bin", self.big_size)
            log(f"blob of {self.big_size // MIB} MiB: {blob.digest[:19]}...")
            with open(blob.path, "rb") as source:
                for rep in range(self.args.reps):
                    order = SERVERS if rep % 2 == 0 else SERVERS[::-1]
                    for server in order:
                        self._one_round(server, rep, blob, source)
        finally:
            issuer.stop()

    def _one_round(self, server: str, rep: int, blob: FileBlob, source: BinaryIO) -> None:
        process = self.servers[server]
        client = PushClient(process.port, USER, PASSWORD)
        chunk = self.args.chunk_mib * MIB
        try:
            jobs: dict[str, tuple[int, int, Callable[[PushClient, str], None]]] = {
                "put": (blob.size, 1, lambda c, r: scenarios.put_blob(c, r, blob, source)),
                "patch": (
                    blob.size,
                    1,
                    lambda c, r: scenarios.patch_blob(c, r, blob, source, chunk),
                ),
            }
            layers = scenarios.small_layers(self.layers, 4096, f"{server}/{rep}")
            jobs["layers"] = (
                sum(map(len, layers)),
                len(layers) + 1,
                lambda c, r: scenarios.push_image(c, r, layers),
            )
            for kind, (size, blobs, push) in jobs.items():
                repo = repository(server, f"{kind}-{rep}")
                client.authorize(repo)
                result = scenarios.timed(process.pid, size, blobs, partial(push, client, repo))
                if kind != "layers":
                    scenarios.check_stored(client, repo, blob.digest, blob.size)
                self.pushes.setdefault((kind, server), []).append(result)
                log(
                    f"{kind:<6} {server:<12} rep {rep + 1}: {result.seconds:7.2f} s, "
                    f"{result.mib_s:8.1f} MiB/s, {result.blobs_s:7.1f} blobs/s, server "
                    f"{result.server_cpu:.2f} CPU-s, client {result.client_cpu:.2f} CPU-s"
                )
        finally:
            client.close()

    # --- the report ----------------------------------------------------------------------

    def metrics(self) -> list[Metric]:
        size = f"{self.big_size // MIB}MiB"
        found: list[Metric] = []
        for kind, name in (("put", f"push_put_{size}"), ("patch", f"push_patch_{size}")):
            found += self._pair(kind, name, "MiB/s", lambda p: p.mib_s, "ratio>=1.0")
            found += self._pair(kind, f"{name}_cpu", "CPU-s/GiB", lambda p: p.cpu_per_gib, "")
        name = f"push_{self.layers}_layers"
        found += self._pair("layers", name, "blobs/s", lambda p: p.blobs_s, "ratio>=1.0")
        found += self._pair(
            "layers", f"{name}_cpu", "CPU-ms/blob", lambda p: p.server_cpu * 1000 / p.blobs, ""
        )
        return found

    def _pair(
        self, kind: str, name: str, unit: str, figure: Callable[[Push], float], check: str
    ) -> list[Metric]:
        mine = [figure(p) for p in self.pushes.get((kind, "mirror"), [])]
        theirs = [figure(p) for p in self.pushes.get((kind, "distribution"), [])]
        if not mine or not theirs:
            return []
        notes = "samples " + " ".join(f"{v:.1f}" for v in mine)
        return [
            Metric(
                f"{name}_median",
                statistics.median(mine),
                unit,
                statistics.median(theirs),
                "distribution",
                ">= 1.0x" if check else "",
                check,
                notes,
            )
        ]

    def cpu_lines(self) -> list[str]:
        lines = []
        for (kind, server), pushes in self.pushes.items():
            server_cpu = sum(p.server_cpu for p in pushes)
            client_cpu = sum(p.client_cpu for p in pushes)
            if kind == "layers":
                blobs = sum(p.blobs for p in pushes)
                per, unit = (server_cpu * 1000 / blobs, client_cpu * 1000 / blobs), "CPU-ms/blob"
            else:
                gib = sum(p.size for p in pushes) / GIB
                per, unit = (server_cpu / gib, client_cpu / gib), "CPU-s/GiB"
            lines.append(
                f"{kind:<6} {server:<12} server {per[0]:6.2f} {unit}, client {per[1]:6.2f} {unit}"
            )
        return lines

    def stop(self) -> list[str]:
        """Stop both servers; what the mirror logged beyond its start-up line."""
        for server in self.servers.values():
            server.stop()
        mirror = self.servers.get("mirror")
        lines = mirror.log().splitlines() if isinstance(mirror, ProxyProcess) else []
        issues = [line for line in lines if line.strip() and "hpc-mirror serving" not in line]
        return ["\n".join(issues[-60:])] if issues else []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = os.cpu_count() or 0
    started = time.perf_counter()
    error = None
    with run_directory(args.workdir, "hpc-mirror-bench-push-", args.keep) as workdir:
        print(
            f"hpc-mirror push benchmark ({'quick' if args.quick else 'full'}) on "
            f"{platform.node()}: {cores} CPU cores, Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.2f}, workdir {workdir}",
            flush=True,
        )
        run = Run(args, workdir)
        try:
            with watchdog.limit(args.timeout):
                run.measure()
        except ABORTS as exc:
            error = f"{type(exc).__name__}: {exc}"
            print(f"\nBENCHMARK ABORTED: {error}", file=sys.stderr, flush=True)
        finally:
            issues = run.stop()
    metrics = [m.judge() for m in run.metrics()]
    report.print_findings(
        run.cpu_lines(), issues, "Server and client CPU per GiB (per blob for the layers), all reps"
    )
    report.print_results(metrics)
    print(
        f"({cores} CPU cores shared by the client and both servers; load average now "
        f"{os.getloadavg()[0]:.2f}; run took {time.perf_counter() - started:.0f} s)"
    )
    if args.json:
        details = {f"{k}/{s}": [vars(p) for p in v] for (k, s), v in run.pushes.items()}
        report.write_json(args.json, metrics, run.cpu_lines(), details, issues, error=error)
    if error:
        return 2
    return 0 if all(m.verdict != "MISS" for m in metrics) else 1


if __name__ == "__main__":
    sys.exit(main())
