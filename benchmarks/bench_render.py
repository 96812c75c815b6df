#!/usr/bin/env python3
"""Benchmark of the static catalog renderer (`mirror.catalog.render`, `mirror render`).

What it does, all local and in one temp directory (removed at the end unless --keep):

1. Synthesises a cache of N tags (default 10,000) straight through `ContentStore`, linked
   the way the proxy links what it caches: `put_bytes` for manifests and blobs,
   `link_manifest` for every manifest (and an index's children), `link_blob` for configs
   and layers, `write_tag` with a fixed `confirmed_at` so the site is deterministic.
   Shape: N / 10 repositories over three upstream prefixes (docker.io, ghcr.io, quay.io;
   one to three name components), 10 tags each ("latest" in half the repositories).
   * ~96 % single-platform OCI images: a compact manifest with a config and 2-3 layers;
     the config is a realistic image config (architecture, os, created, author, Env, Cmd,
     Entrypoint, WorkingDir, org.opencontainers.image.* labels, rootfs, 3-5 history steps).
     Layer blobs are stored too (tiny, one shared base layer per upstream family plus
     unique ones) so the blob count `stats.html` scans is realistic. NB: facts of an OCI
     image read only the manifest and its config, never the layers, so facts are
     "complete" (cached) whether or not layer blobs exist.
   * ~2 % multi-arch OCI indexes (linux/amd64 + linux/arm64, children stored and linked);
   * ~2 % SIF artifacts (Apptainer's ORAS layout: SIF config + one SIF layer): a handful of
     distinct SIF files built with `tests/support/sifwriter.py`, shared across tags; each
     tag's manifest is distinct (created and ref.name annotations).
   About 10 % of tags get pull counts in the pull statistics, for the "most pulled" list.
   Synthesis skips fsync (the store fsyncs every blob, ~1 ms each here); --fsync keeps it.
2. Times `render()` in-process with time.perf_counter:
   a. full render, cold: empty output dir;
   b. re-render with nothing changed (median of --repeat runs);
   c. incremental: one new tag added to one repository before each run (median);
   and `python -m mirror.cli render --config ...` once as a subprocess after one more new
   tag, wall time including interpreter start and imports.
3. Prints a RESULTS block (seconds, target, PASS/MISS, pages written/reused, load average
   before and after: the machine is shared, so read the numbers with it).
   Targets: full render <= 10 s, incremental render after one new tag <= 1 s (2 cores).
4. When a target is missed (or with --profile), profiles that scenario again: py-spy
   (default when installed; samples a child process at 100 Hz with idle frames included,
   so time blocked in filesystem calls counts) or cProfile (--profiler cprofile,
   in-process, ~2-3x slower). Either way the child also times the render's phases by
   wrapping mirror functions in memory (no file is changed). Prints the phase table, the
   top functions by cumulative time and the top lines (py-spy) or functions by own time.
   A profile that would not fit in the remaining --timeout is skipped, and says so.

Usage::

    .venv/bin/python benchmarks/bench_render.py [--tags 10000] [--json PATH] [--workdir DIR]
        [--repeat 3] [--profile | --no-profile] [--profiler auto|py-spy|cprofile]
        [--no-cli] [--keep] [--fsync] [--timeout 290]

Exit status: 0 all targets met, 1 a target missed, 2 the run failed or timed out.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from benchmarks import watchdog  # noqa: E402
from benchmarks.harness import run_directory  # noqa: E402
from benchmarks.render import profiling, report  # noqa: E402
from benchmarks.render.timing import FULL_TARGET, INCREMENTAL_TARGET, RenderBench  # noqa: E402

ORDER = ["full_cold", "unchanged", "incremental", "cli_incremental"]
"""The order of the RESULTS rows."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", type=int, default=10_000, help="tags to synthesise")
    parser.add_argument("--tags-per-repo", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs of (b) and (c)")
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir (default $TMPDIR)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--profile", action="store_true", help="profile even if targets pass")
    group.add_argument("--no-profile", action="store_true", help="never profile")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess run")
    parser.add_argument("--fsync", action="store_true", help="fsync while synthesising")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument(
        "--profiler",
        choices=("auto", "py-spy", "cprofile"),
        default="auto",
        help="auto: py-spy if installed, else cProfile",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=290,
        help="abort after this long; profiles that would not fit are skipped",
    )
    args = parser.parse_args(argv)
    if args.tags < 1 or args.tags_per_repo < 1 or args.repeat < 1:
        parser.error("--tags, --tags-per-repo and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    bench: RenderBench | None = None
    profiles: list[dict[str, Any]] = []
    skipped: list[str] = []
    load_before = os.getloadavg()
    error = None
    with run_directory(args.workdir, "hpc-mirror-bench-render-", args.keep) as workdir:
        print(
            f"hpc-mirror render benchmark on {platform.node()}: {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, workdir {workdir}",
            flush=True,
        )
        try:
            with watchdog.limit(args.timeout):
                bench = RenderBench(args, workdir)
                bench.run()
                missed = [m.key for m in bench.metrics if m.status == "MISS"]
                profiles, skipped = profiling.profile_within(
                    bench,
                    profiling.wanted(args, missed),
                    profiling.choose_tool(args.profiler),
                    lambda: args.timeout - (time.perf_counter() - started),
                )
        except (
            RuntimeError,
            watchdog.Timeout,
            KeyboardInterrupt,
            OSError,
            subprocess.SubprocessError,
        ) as exc:
            error = f"{type(exc).__name__}: {exc}"
            print(f"\nBENCHMARK ABORTED: {error}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    if bench is None:
        return 2
    print()
    bench.metrics.sort(key=lambda m: ORDER.index(m.key))
    print(report.results_block(bench.metrics, bench.base_shape, load_before, os.getloadavg()))
    for profile in profiles:
        print()
        print(report.profile_block(profile))
    for note in skipped:
        print(f"\nprofile skipped: {note}")
    print(f"\n(total benchmark time {elapsed:.1f} s, synthesis {bench.synth.shape.seconds:.1f} s)")
    if args.json:
        report.write_json(
            args.json,
            {
                "benchmark": "render",
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "tags_requested": args.tags,
                "cache": asdict(bench.base_shape),
                "tags_added_during_run": bench.new_tags,
                "targets": {"full_seconds": FULL_TARGET, "incremental_seconds": INCREMENTAL_TARGET},
                "results": [m.as_dict() for m in bench.metrics],
                "profiles": profiles,
                "profiles_skipped": skipped,
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "error": error,
                "elapsed_seconds": round(elapsed, 2),
            },
        )
    if error:
        return 2
    return 1 if any(m.status == "MISS" for m in bench.metrics) else 0


if __name__ == "__main__":
    sys.exit(main())
