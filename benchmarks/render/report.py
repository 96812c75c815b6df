"""What the render benchmark reports: one Metric per scenario (its runs and target), the
RESULTS and PROFILE blocks, and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.render.synthetic import CacheShape


@dataclass
class Run:
    """One timed render and what it wrote."""

    seconds: float
    pages_written: int
    pages_reused: int


@dataclass
class Metric:
    """One scenario: its runs (the median counts) and its target in seconds, if any."""

    key: str
    label: str
    runs: list[Run] = field(default_factory=list)
    target: float | None = None
    note: str = ""

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def status(self) -> str:
        if self.target is None:
            return "info"
        return "PASS" if self.seconds <= self.target else "MISS"

    def median_run(self) -> Run:
        return sorted(self.runs, key=lambda r: r.seconds)[(len(self.runs) - 1) // 2]

    def as_dict(self) -> dict[str, Any]:
        run = self.median_run()
        return {
            "metric": self.key,
            "label": self.label,
            "seconds": round(self.seconds, 4),
            "samples": [round(r.seconds, 4) for r in self.runs],
            "target": self.target,
            "status": self.status,
            "pages_written": run.pages_written,
            "pages_reused": run.pages_reused,
            "note": self.note,
        }


def results_block(
    metrics: list[Metric], shape: CacheShape, load_before: tuple, load_after: tuple
) -> str:
    lines = [
        f"RESULTS  hpc-mirror catalog render: {shape.tags} tags in {shape.repositories} "
        f"repositories ({shape.indexes} multi-arch, {shape.sifs} SIF), "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after",
        f"{'metric':<48} {'seconds':>8}  {'target':>8}  {'status':<6} "
        f"{'written':>8} {'reused':>8}  samples",
    ]
    for m in metrics:
        run = m.median_run()
        target = f"<= {m.target:g} s" if m.target is not None else "-"
        samples = ", ".join(f"{r.seconds:.3f}" for r in m.runs) if len(m.runs) > 1 else ""
        lines.append(
            f"{m.label:<48} {m.seconds:>8.3f}  {target:>8}  {m.status:<6} "
            f"{run.pages_written:>8} {run.pages_reused:>8}  {samples}"
        )
        if m.note:
            lines.append(f"{'':<50}({m.note})")
    lines.append(
        "written = files written (pages, repo.json, catalog.json, assets) because "
        "their inputs changed; reused = files left as the previous render wrote them"
    )
    return "\n".join(lines)


def profile_block(profile: dict[str, Any]) -> str:
    def num(value: Any, unit: str = " s") -> str:
        return f"{value:>8.3f}{unit}" if isinstance(value, (int, float)) else f"{'':>8}{unit}"

    sampled = profile["tool"].startswith("py-spy")
    lines = [
        f"PROFILE  {profile['scenario']}: render took {profile['seconds_profiled']:.3f} s "
        f"while profiled by {profile['tool']} ({profile['pages_written']} written, "
        f"{profile['pages_reused']} reused)",
        "phases (wall time of wrapped functions; nested rows are included in the row above them):",
    ]
    for row in profile["phases"]:
        lines.append(f"  {row['phase']:<54} {row['seconds']:>8.3f} s  {row['calls']:>7} calls")
    lines.append("top functions by cumulative time:")
    for row in profile["top_cumulative"]:
        calls = f"{row['calls']:>8}  " if row["calls"] is not None else ""
        lines.append(
            f"  {num(row['cumulative'])} cum {num(row['own'])} own  {calls}{row['function']}"
        )
    lines.append(
        "top "
        + ("source lines (innermost Python frame, C calls included)" if sampled else "functions")
        + " by own time:"
    )
    for row in profile["top_own"]:
        calls = f"{row['calls']:>8}  " if row["calls"] is not None else ""
        cumulative = f" {num(row['cumulative'])} cum" if row["cumulative"] is not None else ""
        lines.append(f"  {num(row['own'])} own{cumulative}  {calls}{row['function']}")
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path}")
