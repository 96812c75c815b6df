"""Profiles of a render that missed its target (or of any, with --profile): py-spy on a
child process (this module run with -m; 100 Hz, idle frames included, so time blocked in
filesystem calls counts) or cProfile in-process. Either way the render's phases are timed
by wrapping mirror functions in memory (no file is changed)."""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import pstats
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jinja2

from benchmarks.harness import REPO_ROOT, BenchError, log
from benchmarks.render.timing import PYTHON, RenderBench
from mirror import config as config_module
from mirror.catalog import gather as gather_module
from mirror.catalog import pages as pages_module
from mirror.catalog import render as catalog_module
from mirror.catalog import site_writer as sitewriter_module
from mirror.catalog.render import render

PY_SPY_RATE = 100  # samples per second


def wanted(args: argparse.Namespace, missed: list[str]) -> list[str]:
    """The scenarios to profile: those that missed their target, or both with --profile."""
    if args.no_profile:
        return []
    chosen = []
    if args.profile or "incremental" in missed or "cli_incremental" in missed:
        chosen.append("incremental")
    if args.profile or "full_cold" in missed:
        chosen.append("full_cold")
    return chosen


def choose_tool(requested: str) -> str:
    """py-spy or cprofile: `auto` takes py-spy when it is installed."""
    if requested == "auto":
        return "py-spy" if py_spy_path() else "cprofile"
    if requested == "py-spy" and not py_spy_path():
        raise BenchError("py-spy not found (pip install py-spy into the venv)")
    return requested


def profile_within(
    bench: RenderBench, scenarios: list[str], tool: str, seconds_left: Callable[[], float]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Profile each scenario that fits in the time left; the profiles, and why any was
    skipped."""
    profiles: list[dict[str, Any]] = []
    skipped: list[str] = []
    for which in scenarios:
        measured = next(m.seconds for m in bench.metrics if m.key == which)
        estimate = measured * (1.3 if tool == "py-spy" else 3.0) + 5
        left = seconds_left()
        if estimate > left - 10:
            skipped.append(f"{which} (needs ~{estimate:.0f} s, {left:.0f} s left of --timeout)")
            log(f"skipping the {which} profile: {skipped[-1]}")
            continue
        log(f"profiling {which} with {tool}")
        profiles.append(profile(bench, which, tool))
    return profiles, skipped


def profile(bench: RenderBench, which: str, tool: str) -> dict[str, Any]:
    """Profile one render of scenario `which` (full_cold or incremental) with py-spy
    (sampling a child process, idle frames included so filesystem waits count) or
    cProfile (in-process, deterministic but ~2-3x slower). Both record phase times."""
    bench.prepare(which)
    if tool == "py-spy":
        return _profile_py_spy(bench, which)
    return _profile_cprofile(bench, which)


def _profile_cprofile(bench: RenderBench, which: str) -> dict[str, Any]:
    phases = PhaseTimer()
    profiler = cProfile.Profile()
    with phases.installed():
        started = time.perf_counter()
        profiler.enable()
        try:
            report = render(bench.config, bench.out)
        finally:
            profiler.disable()
        total = time.perf_counter() - started
    stats = pstats.Stats(profiler, stream=io.StringIO())
    return {
        "scenario": which,
        "tool": "cProfile",
        "seconds_profiled": round(total, 3),
        "pages_written": report.pages_written,
        "pages_reused": report.pages_reused,
        "phases": phases.table(),
        "top_cumulative": top(stats, "cumulative", 28),
        "top_own": top(stats, "tottime", 22),
    }


def _profile_py_spy(bench: RenderBench, which: str) -> dict[str, Any]:
    raw = bench.workdir / f"py-spy-{which}.txt"
    child_out = bench.workdir / f"profile-child-{which}.json"
    py_spy = py_spy_path()
    if py_spy is None:
        raise BenchError("py-spy not found (pip install py-spy into the venv)")
    command = [
        py_spy,
        "record",
        "--idle",
        "--rate",
        str(PY_SPY_RATE),
        "--format",
        "raw",
        "--output",
        str(raw),
        "--",
        PYTHON,
        "-m",
        "benchmarks.render.profiling",
        str(bench.config_path),
        str(child_out),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    if done.returncode != 0 or not child_out.exists():
        raise BenchError(f"py-spy exited {done.returncode}:\n{done.stderr[-2000:]}")
    child = json.loads(child_out.read_text())
    own, cumulative, samples = collapse(raw.read_text())
    per_sample = 1.0 / PY_SPY_RATE
    return {
        "scenario": which,
        "tool": f"py-spy ({samples} samples at {PY_SPY_RATE} Hz, idle frames included)",
        "seconds_profiled": child["seconds"],
        "pages_written": child["pages_written"],
        "pages_reused": child["pages_reused"],
        "phases": child["phases"],
        "top_cumulative": [
            {
                "function": f,
                "calls": None,
                "own": round(own_by_function(own).get(f, 0) * per_sample, 3),
                "cumulative": round(n * per_sample, 3),
            }
            for f, n in cumulative.most_common()
            if "benchmarks/" not in f
        ][:28],
        "top_own": [
            {"function": f, "calls": None, "own": round(n * per_sample, 3), "cumulative": None}
            for f, n in own.most_common(22)
        ],
    }


def profile_child(config_path: str, out_path: str) -> None:
    """Body of the process py-spy samples: one render, with phase timings, as JSON."""
    config = config_module.load(config_path)
    phases = PhaseTimer()
    with phases.installed():
        started = time.perf_counter()
        report = render(config)
        seconds = time.perf_counter() - started
    Path(out_path).write_text(
        json.dumps(
            {
                "seconds": round(seconds, 3),
                "pages_written": report.pages_written,
                "pages_reused": report.pages_reused,
                "phases": phases.table(),
            }
        )
    )


def py_spy_path() -> str | None:
    candidate = Path(PYTHON).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def collapse(raw: str) -> tuple[Counter, Counter, int]:
    """py-spy raw (collapsed) stacks -> own samples per innermost line, cumulative samples
    per function (counted once per stack), total samples."""
    own: Counter = Counter()
    cumulative: Counter = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if frames[:1] and frames[0].startswith("process "):
            frames = frames[1:]
        if not frames:
            continue
        own[frames[-1]] += count
        for function in {_function_of(f) for f in frames}:
            cumulative[function] += count
    return own, cumulative, total


def _function_of(frame: str) -> str:
    """'name (path/file.py:123)' -> 'name (path/file.py)': lines folded into functions."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})" if where else name


def own_by_function(own: Counter) -> dict[str, int]:
    folded: Counter = Counter()
    for frame, count in own.items():
        folded[_function_of(frame)] += count
    return folded


class PhaseTimer:
    """Wall time per phase of one render, by wrapping functions for the duration only
    (the modules are patched in memory in this process; no file is changed). Nested
    phases are included in their parents; counts are calls."""

    PHASES: tuple[tuple[str, Any, str], ...] = (
        ("gather (model from the store)", catalog_module, "gather"),
        ("  store.list_repositories (glob)", catalog_module.ContentStore, "list_repositories"),
        ("  store.tag_records", catalog_module.ContentStore, "tag_records"),
        ("  pulls.counts (diskcache get)", catalog_module.PullStats, "counts"),
        ("  FactsCache.get (per-render memo)", gather_module.FactsCache, "get"),
        ("    manifest_facts", gather_module, "manifest_facts"),
        ("render_repositories", catalog_module._Renderer, "render_repositories"),
        ("  fingerprint (page keys)", pages_module, "fingerprint"),
        ("  _dumps (repo.json, catalog.json)", pages_module, "_dumps"),
        ("  _page (reuse/render)", pages_module.Pages, "_page"),
        ("    SiteWriter.unchanged (fingerprint match)", sitewriter_module.SiteWriter, "unchanged"),
        ("    Template.render", jinja2.Template, "render"),
        ("    SiteWriter.write", sitewriter_module.SiteWriter, "write"),
        ("      SiteWriter._target (in unchanged+write)", sitewriter_module.SiteWriter, "_target"),
        ("  _stats -> _blob_totals (blob scan)", catalog_module, "_blob_totals"),
        ("  summarize", gather_module, "summarize"),
        ("SiteWriter.__init__ (read old state)", sitewriter_module.SiteWriter, "__init__"),
        ("SiteWriter.commit (delete removed files, state)", sitewriter_module.SiteWriter, "commit"),
    )

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[PhaseTimer]:
        restore = []
        for label, owner, name in self.PHASES:
            original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            restore.append((owner, name, original))
            setattr(owner, name, self._wrap(label, original))
        try:
            yield self
        finally:
            for owner, name, original in reversed(restore):
                setattr(owner, name, original)

    def _wrap(self, label: str, function: Callable) -> Callable:
        slot = self.totals.setdefault(label, [0.0, 0])

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                slot[0] += time.perf_counter() - started
                slot[1] += 1

        return timed

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "phase": label,
                "seconds": round(self.totals[label][0], 3),
                "calls": self.totals[label][1],
            }
            for label, _, _ in self.PHASES
        ]


def top(stats: pstats.Stats, key: str, limit: int) -> list[dict[str, Any]]:
    rows = []
    for (filename, line, name), (_, nc, tt, ct, _) in stats.stats.items():  # type: ignore
        short = filename
        for marker in ("/site-packages/", "/lib/python3.11/", str(REPO_ROOT) + "/"):
            if marker in filename:
                short = filename.split(marker, 1)[1]
        rows.append(
            {
                "function": f"{short}:{line}({name})" if line else name,
                "calls": nc,
                "own": round(tt, 3),
                "cumulative": round(ct, 3),
            }
        )
    field_name = "cumulative" if key == "cumulative" else "own"
    return sorted(rows, key=lambda r: -r[field_name])[:limit]


if __name__ == "__main__":
    profile_child(*sys.argv[1:3])
