"""One run of the proxy benchmark: the upstream and its seeded images, the proxies and
distribution peers the scenarios start and retire, and what the scenarios found (metrics,
CPU lines, details for the JSON, proxy issues)."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks import watchdog
from benchmarks.harness import MIB, BenchError, log
from benchmarks.proxy import report
from benchmarks.proxy.report import Metric
from benchmarks.proxy.seed import TAG, Image, push_image, random_file
from benchmarks.proxy.servers import BaselineRegistry, UpstreamRegistry, mirror_proxy
from tests.support.processes import ServerProcess, StartError
from tests.support.proxy import ProxyProcess
from tests.support.seed import RegistryClient
from tests.support.tls import LoopbackCA

ABORTS = (
    BenchError,
    StartError,
    watchdog.Timeout,
    KeyboardInterrupt,
    OSError,
    subprocess.SubprocessError,
    threading.BrokenBarrierError,
)
"""What ends a run early: its partial results are still reported."""


def add_run_options(parser: argparse.ArgumentParser, disk_needed: str) -> None:
    """The options of a run with a Session: --json, --workdir, --cache-dir, --keep and
    --timeout; `disk_needed` says how much room a full run takes under --workdir."""
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="parent of the run's temp dir (default: the system temp dir, "
        f"/tmp); needs about {disk_needed} free for a full run",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="parent for the proxies' caches and the distribution peers' "
        "storage (default: inside the run's temp dir); e.g. /dev/shm "
        "to take the disk out of the cold measurements",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (logs, caches) for inspection"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=540.0,
        help="abort the whole run after this many seconds (default 540)",
    )


BIG_REPO = "bench/big"
MID_REPO = "bench/mid"


class Session:
    """Use as a context manager: leaving it stops every server the run started, reads what
    the proxies wrote to their logs, and removes the caches unless --keep. `layer_sizes`
    (big, mid) overrides the sizes --quick chooses."""

    def __init__(
        self,
        args: argparse.Namespace,
        workdir: Path,
        layer_sizes: tuple[int, int] | None = None,
    ) -> None:
        self.args = args
        self.workdir = workdir
        self.cache_parent = (
            Path(tempfile.mkdtemp(prefix="caches-", dir=args.cache_dir))
            if args.cache_dir
            else workdir
        )
        self.client = args.client
        self.reps = args.reps
        big_mib, mid_mib = (256, 64) if args.quick else (1024, 256)
        self.big_size, self.mid_size = layer_sizes or (big_mib * MIB, mid_mib * MIB)
        self.wrk_seconds = 3 if args.quick else 10
        self.metrics: list[Metric] = []
        self.details: dict[str, Any] = {}
        self.cpu_lines: list[str] = []
        self.proxy_issues: list[str] = []
        self._stack = contextlib.ExitStack()
        self._count = 0
        self._unread: list[ProxyProcess] = []  # proxies whose log was not read yet
        self._upstream: UpstreamRegistry | None = None
        self._images: dict[str, Image] = {}

    def __enter__(self) -> Session:
        return self

    def run(self, measure: Callable[[Session], None], timeout: float) -> str | None:
        """Run the scenarios within `timeout` seconds, then stop every server; the error
        that ended the run early, if any (what was measured until then still counts)."""
        try:
            with watchdog.limit(timeout), self:
                measure(self)
        except ABORTS as exc:
            error = f"{type(exc).__name__}: {exc}"
            print(f"\nBENCHMARK ABORTED: {error}", file=sys.stderr, flush=True)
            return error
        return None

    def conclude(
        self,
        error: str | None,
        json_path: Path | None,
        footer: str,
        cpu_heading: str | None = None,
        notes: Iterable[str] = (),
        **run: Any,
    ) -> int:
        """Print the findings, `notes` and the RESULTS table, then `footer`; write the JSON
        file with `run`. The exit status: 0 every target met, 1 one missed, 2 aborted."""
        metrics = [m.judge() for m in self.metrics]
        report.print_findings(self.cpu_lines, self.proxy_issues, cpu_heading)
        for note in notes:
            print(f"\nNOTE: {note}")
        report.print_results(metrics)
        print(footer)
        if json_path:
            report.write_json(
                json_path,
                metrics,
                self.cpu_lines,
                self.details,
                self.proxy_issues,
                error=error,
                **run,
            )
        if error:
            return 2
        return 0 if all(m.verdict != "MISS" for m in metrics) else 1

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()
        for proxy in list(self._unread):
            self.collect_proxy_issues(proxy)
        if self.cache_parent != self.workdir:
            if self.args.keep:
                print(f"kept {self.cache_parent}")
            else:
                shutil.rmtree(self.cache_parent, ignore_errors=True)

    # --- the upstream and its content ---------------------------------------------------

    @property
    def upstream(self) -> UpstreamRegistry:
        assert self._upstream is not None, "seed() starts the upstream"
        return self._upstream

    @property
    def big(self) -> Image:
        """The big image (1 GiB layer, 256 MiB with --quick): warm and cold GETs."""
        return self._images[BIG_REPO]

    @property
    def mid(self) -> Image:
        """The mid image (256 MiB layer, 64 MiB with --quick): herd and manifests."""
        return self._images[MID_REPO]

    def seed(self) -> None:
        """Start the upstream and push the big and the mid image to it."""
        upstream = UpstreamRegistry(workdir=self.workdir / "upstream", log_level="error")
        self._stack.callback(upstream.stop)
        self._upstream = upstream.start()
        log(f"upstream docker-registry pid {upstream.pid} on {upstream.url}")
        client = RegistryClient(upstream.url, timeout=300)
        try:
            for repo, size in ((BIG_REPO, self.big_size), (MID_REPO, self.mid_size)):
                self._images[repo] = self._seed_one(client, repo, size)
        finally:
            client.close()

    def _seed_one(self, client: RegistryClient, repo: str, size: int) -> Image:
        started = time.perf_counter()
        layer = random_file(self.workdir / f"seed-{size // MIB}MiB.bin", size)
        generated = time.perf_counter()
        image = push_image(client, repo, layer)
        layer.path.unlink()
        log(
            f"seeded {repo}:{TAG}: layer {size // MIB} MiB sha256:{image.layer_hex[:12]}... "
            f"(random+hash+write {generated - started:.1f} s, push "
            f"{time.perf_counter() - generated:.1f} s), manifest "
            f"{image.manifest_digest[:19]}..."
        )
        return image

    # --- servers the scenarios start and retire -------------------------------------------

    def _next(self, kind: str) -> Path:
        self._count += 1
        return self.cache_parent / f"{kind}-{self._count}"

    def stop_at_exit(self, server: ServerProcess) -> None:
        """Stop `server` when the session ends, if it was not stopped earlier."""
        self._stack.callback(server.stop)

    def new_proxy(
        self,
        upstream_url: str | None = None,
        ca_file: Path | None = None,
        listener_ca: LoopbackCA | None = None,
    ) -> ProxyProcess:
        """A fresh hpc-mirror process with an empty cache in front of the upstream (or of
        `upstream_url`, whose certificate is from `ca_file`); serving HTTPS with a
        certificate from `listener_ca`, if given."""
        proxy = mirror_proxy(
            self._next("proxy"), upstream_url or self.upstream.url, ca_file, listener_ca
        )
        self.stop_at_exit(proxy)
        self._unread.append(proxy)
        proxy.start()
        log(f"hpc-mirror pid {proxy.pid} on port {proxy.port} (cache {proxy.cache_root})")
        return proxy

    def retire_proxy(self, proxy: ProxyProcess) -> None:
        """Stop a proxy, keep what it logged, and free its cache."""
        proxy.stop()
        self.collect_proxy_issues(proxy)
        shutil.rmtree(proxy.cache_root, ignore_errors=True)
        shutil.rmtree(proxy.config["cache"]["index_dir"], ignore_errors=True)

    def new_baseline(self) -> BaselineRegistry:
        """A fresh distribution proxy-mode registry with empty storage."""
        peer = BaselineRegistry(workdir=self._next("distproxy"), proxy_remote_url=self.upstream.url)
        self.stop_at_exit(peer)
        return peer.start()

    def retire_baseline(self, peer: BaselineRegistry) -> None:
        peer.stop()
        shutil.rmtree(peer.storage_dir, ignore_errors=True)

    def collect_proxy_issues(self, proxy: ProxyProcess) -> None:
        """Everything a stopped proxy wrote beyond its start-up line is an issue."""
        if proxy in self._unread:
            self._unread.remove(proxy)
        lines = [
            line
            for line in proxy.log().splitlines()
            if line.strip() and not line.startswith("hpc-mirror serving")
        ]
        if lines:
            self.proxy_issues.append(
                f"--- log of {proxy.workdir.name} ({len(lines)} lines, "
                "last 60) ---\n" + "\n".join(lines[-60:])
            )
