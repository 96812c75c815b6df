#!/usr/bin/env python3
"""End-to-end benchmark of hpc-mirror against real peers, all on 127.0.0.1.

What runs (every process is a child of this script, stopped by its own PID at the end):

* upstream: Debian's ``docker-registry`` (CNCF distribution 2.8) with temp storage, seeded
  over its HTTP API with a large and a medium random blob and one OCI manifest for each;
* hpc-mirror (``python -m mirror.cli serve --log-level warning``) in front of it, started
  again with a fresh cache root whenever a measurement needs an empty cache;
* nginx (``sendfile on``) serving the proxy's own cache directory, as the ceiling for a
  warm blob GET;
* distribution in proxy mode (a second ``docker-registry`` with ``proxy.remoteurl`` = the
  upstream and its own storage) as the baseline pull-through cache: for manifest
  requests/s, and (informational) for the cold blob GET;
* another ``docker-registry`` serving the upstream's storage over HTTPS, with a
  certificate from a CA made for the run (the proxy's ``ca_file``);
* ``wrk`` for manifest requests/s; blob downloads use a small raw-socket HTTP/1.1 reader
  (``recv_into`` a 4 MiB buffer, bytes discarded or sha256-hashed), or ``curl``.

Measurements: warm 1 GiB blob GET (proxy vs nginx on the same file), cold 1 GiB GET
(proxy with an empty cache vs the upstream directly, and vs distribution's proxy mode;
the proxy's CPU per GiB vs sha256 alone), the same cold GET from the HTTPS upstream, 32
concurrent cold clients of one 256 MiB blob (wall time, per-client MiB/s, upstream blob
GETs from the upstream's access log, sha256 of every body), and manifest requests/s by tag
and by digest (proxy vs distribution's proxy mode). Around every measurement the CPU
seconds of each server and of the client are read from /proc, because on a small machine
the processes compete for the same cores. ``--quick`` shrinks sizes to 256 MiB / 64 MiB
and wrk to 3 s. See benchmarks/README.md.

Usage::

    .venv/bin/python benchmarks/bench_proxy.py [--quick] [--json PATH] [--workdir DIR]
                                               [--cache-dir DIR] [--client socket|curl]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from benchmarks import watchdog  # noqa: E402
from benchmarks.harness import BenchError, run_directory  # noqa: E402
from benchmarks.proxy import blob_gets, ceilings, herd, manifest_rps, report, tls_cold  # noqa: E402
from benchmarks.proxy.clients import CURL, WRK  # noqa: E402
from benchmarks.proxy.servers import EXECUTABLES  # noqa: E402
from benchmarks.proxy.session import Session  # noqa: E402
from tests.support.processes import StartError  # noqa: E402

REPETITIONS = 3

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="256 MiB / 64 MiB blobs and 3 s wrk runs (smoke test)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="parent of the run's temp dir (default: the system temp dir, "
        "/tmp); needs about 4 GiB free for a full run",
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
        "--client",
        choices=("socket", "curl"),
        default="socket",
        help="blob download client for the warm/cold tests (default socket)",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=REPETITIONS,
        help=f"repetitions of each blob GET (default {REPETITIONS})",
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
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def check_tools() -> None:
    missing = [path for path in (*EXECUTABLES, WRK, CURL) if not os.access(path, os.X_OK)]
    if missing:
        raise SystemExit(f"missing executables: {', '.join(missing)}")


def measure(session: Session) -> None:
    """The scenarios, in order: the herd leaves a warm proxy for the manifest runs."""
    ceilings.measure(session)
    session.seed()
    ceilings.fill_floor(session)
    blob_gets.measure(session)
    tls_cold.measure(session)
    warm_proxy = herd.measure(session)
    manifest_rps.measure(session, warm_proxy)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools()
    cores = os.cpu_count() or 0
    started = time.perf_counter()
    error: str | None = None
    session: Session | None = None
    with run_directory(args.workdir, "hpc-mirror-bench-", args.keep) as workdir:
        print(
            f"hpc-mirror benchmark ({'quick' if args.quick else 'full'}) on "
            f"{platform.node()}: {cores} CPU cores, Python {platform.python_version()}, "
            f"client {args.client}, workdir {workdir}"
        )
        print(
            f"NOTE: the load generators (wrk, the download clients) and every server "
            f"share these {cores} cores, so absolute numbers are lower bounds and the "
            "ratios compare servers under the same handicap. All content is in the page "
            "cache: 'cold' means an empty proxy cache, not a cold disk.",
            flush=True,
        )
        try:
            with watchdog.limit(args.timeout), Session(args, workdir) as session:
                measure(session)
        except ABORTS as exc:
            error = f"{type(exc).__name__}: {exc}"
            print(f"\nBENCHMARK ABORTED: {error}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    metrics = [m.judge() for m in session.metrics] if session else []
    if session is not None:
        report.print_findings(session.cpu_lines, session.proxy_issues)
    report.print_results(metrics)
    print(
        f"({cores} CPU cores shared by clients and servers; run took {elapsed:.0f} s"
        f"{'; --quick sizes' if args.quick else ''})"
    )
    if args.json:
        report.write_json(
            args.json,
            metrics,
            session.cpu_lines if session else [],
            session.details if session else {},
            session.proxy_issues if session else [],
            mode="quick" if args.quick else "full",
            cores=cores,
            client=args.client,
            seconds=elapsed,
            error=error,
        )
    if error:
        return 2
    return 0 if all(m.verdict != "MISS" for m in metrics) else 1


if __name__ == "__main__":
    sys.exit(main())
