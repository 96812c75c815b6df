#!/usr/bin/env python3
"""Load benchmark of hpc-mirror: many clients at once, all on 127.0.0.1, bounded in time.

What runs (every process is a child of this script, stopped by its own PID at the end):
Debian's ``docker-registry`` as the upstream (access log on), seeded with a 64 MiB and a
256 MiB layer; hpc-mirror (``python -m mirror.cli serve --log-level warning``) started
afresh for every scenario, with a soft RLIMIT_NOFILE of 1024; ``wrk`` for manifests, and
for blobs one thread driving many raw sockets (``recv_into``, bytes discarded).

Scenarios, in order: 1000 clients on a cached manifest (req/s, p50/p99, errors); 200
streams of the cached 64 MiB blob (MiB/s, peak RSS); 500 clients hanging up mid-download
(the proxy's fds and RSS before and after); 300 cold clients of one 256 MiB blob (upstream
requests of every method for it, errors, peak RSS). Targets: 0 errors, exactly 1 upstream
request for the cold blob, peak RSS <= 150 MiB, fds back to baseline. ``--quick`` runs
smaller counts and sizes. See benchmarks/README.md.

Usage::

    .venv/bin/python benchmarks/bench_load.py [--quick] [--json PATH] [--workdir DIR]
                                              [--cache-dir DIR] [--keep] [--timeout S]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from benchmarks.harness import run_directory  # noqa: E402
from benchmarks.load import cold_herd, hangups, manifests, subject, warm_streams  # noqa: E402
from benchmarks.load.footprint import START_NOFILE, raise_nofile  # noqa: E402
from benchmarks.load.plan import FULL, QUICK, Plan  # noqa: E402
from benchmarks.proxy.clients import WRK  # noqa: E402
from benchmarks.proxy.session import Session, add_run_options  # noqa: E402
from tests.support.registry import REGISTRY_BINARY  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 250 manifest clients for 3 s, 50 streams of 16 MiB, 125 "
        "hang-ups, 75 cold clients of 64 MiB",
    )
    add_run_options(parser, "1 GiB")
    # The session of bench_proxy reads these; the load run has no use for them.
    parser.set_defaults(client="socket", reps=1)
    return parser.parse_args(argv)


def measure(session: Session, plan: Plan) -> None:
    """The scenarios, in order: three on one warm cache (a fresh process each), then the
    cold herd on an empty one."""
    session.seed()
    proxy = subject.start(session)
    subject.warm(proxy, session.mid)
    manifests.measure(session, proxy, plan)
    warm_streams.measure(session, proxy, plan)
    hangups.measure(session, proxy, plan)
    session.retire_proxy(proxy)
    cold_herd.measure(session, plan)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [path for path in (REGISTRY_BINARY, WRK) if not os.access(path, os.X_OK)]
    if missing:
        raise SystemExit(f"missing executables: {', '.join(missing)}")
    plan = QUICK if args.quick else FULL
    own_nofile = raise_nofile(os.getpid())  # the clients and wrk need a socket each
    cores = os.cpu_count() or 0
    load_before = os.getloadavg()
    started = time.perf_counter()
    with run_directory(args.workdir, "hpc-mirror-load-", args.keep) as workdir:
        print(
            f"hpc-mirror load benchmark ({'quick' if args.quick else 'full'}) on "
            f"{platform.node()}, {time.strftime('%Y-%m-%d %H:%M %Z')}: {cores} CPU cores "
            f"shared by the proxy, the upstream and the clients; Python "
            f"{platform.python_version()}; load average {load_before[0]:.2f}; workdir {workdir}"
        )
        print(
            f"NOTE: every proxy starts with a soft RLIMIT_NOFILE of {START_NOFILE} (as under "
            f"systemd or a login shell); the clients and wrk run with {own_nofile}.",
            flush=True,
        )
        session = Session(args, workdir, (plan.cold_size, plan.stream_size))
        error = session.run(lambda started_session: measure(started_session, plan), args.timeout)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    return session.conclude(
        error,
        args.json,
        f"({cores} CPU cores shared by the proxy, the upstream and the clients; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; run took {elapsed:.0f} s"
        f"{'; --quick counts and sizes' if args.quick else ''})",
        "CPU seconds per GiB served, or us per manifest request (user+system, all threads)",
        sorted(set(session.details.get("nofile", []))),
        benchmark="load",
        mode="quick" if args.quick else "full",
        plan=asdict(plan),
        date=time.strftime("%Y-%m-%d"),
        host=platform.node(),
        cores=cores,
        load_average=[load_before, load_after],
        seconds=elapsed,
    )


if __name__ == "__main__":
    sys.exit(main())
