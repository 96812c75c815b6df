#!/usr/bin/env python3
"""End-to-end benchmark of hpc-mirror against real peers, all on 127.0.0.1.

What runs (every process is a child of this script, stopped by its own PID at the end):

* upstream: Debian's ``docker-registry`` (CNCF distribution 2.8) with temp storage, seeded
  over its HTTP API with a large and a medium random blob and one OCI manifest for each;
* hpc-mirror (``python -m mirror.cli serve --log-level warning``) in front of it, started
  again with a fresh cache root whenever a measurement needs an empty cache;
* nginx (``sendfile on``) serving the proxy's own cache directory, as the ceiling for a
  warm blob GET; and nginx over TLS (one worker, the same certificate as a proxy serving
  HTTPS) as the ceiling for a warm blob GET over TLS;
* distribution in proxy mode (a second ``docker-registry`` with ``proxy.remoteurl`` = the
  upstream and its own storage) as the baseline pull-through cache: for manifest
  requests/s, and (informational) for the cold blob GET;
* another ``docker-registry`` serving the upstream's storage over HTTPS, with a
  certificate from a CA made for the run (the proxy's ``ca_file``);
* ``wrk`` for manifest requests/s; blob downloads use a small raw-socket HTTP/1.1 reader
  (``recv_into`` a 4 MiB buffer, bytes discarded or sha256-hashed), or ``curl``.

Measurements: warm 1 GiB blob GET (proxy vs nginx on the same file), the same over TLS
(a proxy with ``[server] tls_cert`` vs nginx over TLS with that certificate), cold 1 GiB GET
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
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from benchmarks.harness import run_directory  # noqa: E402
from benchmarks.proxy import (  # noqa: E402
    blob_gets,
    ceilings,
    herd,
    manifest_rps,
    tls_cold,
    tls_warm,
)
from benchmarks.proxy.clients import CURL, WRK  # noqa: E402
from benchmarks.proxy.servers import EXECUTABLES  # noqa: E402
from benchmarks.proxy.session import Session, add_run_options  # noqa: E402

REPETITIONS = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="256 MiB / 64 MiB blobs and 3 s wrk runs (smoke test)"
    )
    add_run_options(parser, "4 GiB")
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
    tls_warm.measure(session)
    tls_cold.measure(session)
    warm_proxy = herd.measure(session)
    manifest_rps.measure(session, warm_proxy)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools()
    cores = os.cpu_count() or 0
    started = time.perf_counter()
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
        session = Session(args, workdir)
        error = session.run(measure, args.timeout)
    elapsed = time.perf_counter() - started
    return session.conclude(
        error,
        args.json,
        f"({cores} CPU cores shared by clients and servers; run took {elapsed:.0f} s"
        f"{'; --quick sizes' if args.quick else ''})",
        mode="quick" if args.quick else "full",
        cores=cores,
        client=args.client,
        seconds=elapsed,
    )


if __name__ == "__main__":
    sys.exit(main())
