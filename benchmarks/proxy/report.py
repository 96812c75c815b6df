"""What a run reports: one Metric per figure, judged against its target, printed as the
RESULTS table and written as JSON."""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Metric:
    """One figure, its peer's figure, and the target it is judged by."""

    name: str
    value: float | None
    unit: str
    peer: float | None = None
    peer_name: str = ""
    target: str = ""
    check: str = (
        ""  # "ratio>=X", "ratio<=X", "value>=X", "value<=X", "value==X"; empty: informational
    )
    notes: str = ""
    ratio: float | None = None
    verdict: str = "info"

    def judge(self) -> Metric:
        if self.value is not None and self.peer:
            self.ratio = self.value / self.peer
        if not self.check:
            self.verdict = "info"
            return self
        comparison = next(op for op in _CHECKS if op in self.check)
        kind, _, bound_text = self.check.partition(comparison)
        subject = self.ratio if kind == "ratio" else self.value
        passed = subject is not None and _CHECKS[comparison](subject, float(bound_text))
        self.verdict = "PASS" if passed else "MISS"
        return self


_CHECKS = {"==": operator.eq, ">=": operator.ge, "<=": operator.le}
_COUNTS = ("GETs", "failures", "req/s", "errors", "requests", "fds")
_MARKS = {"PASS": "✓ PASS", "MISS": "✗ MISS"}


CPU_HEADING = "CPU seconds per GiB moved (median of reps; user+system, all threads)"


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_results(metrics: list[Metric]) -> None:
    print()
    print("RESULTS")
    header = (
        f"{'metric':<38} {'value':>10} {'unit':<8} {'peer':>10} {'ratio':>6}  "
        f"{'target':<16} {'verdict':<7} peer"
    )
    print(header)
    print("-" * (len(header) + 20))
    for m in metrics:
        digits = 0 if m.unit in _COUNTS else (2 if m.unit == "s" else 1)
        ratio = f"{m.ratio:.2f}" if m.ratio is not None else "-"
        print(
            f"{m.name:<38} {fmt(m.value, digits):>10} {m.unit:<8} {fmt(m.peer, digits):>10} "
            f"{ratio:>6}  {m.target or '-':<16} {_MARKS.get(m.verdict, m.verdict):<7} "
            f"{m.peer_name or '-'}" + (f"  [{m.notes}]" if m.notes else "")
        )
    print()


def print_findings(
    cpu_lines: list[str],
    proxy_issues: list[str],
    cpu_heading: str | None = None,
) -> None:
    """The CPU summary and whatever the proxies logged, before the RESULTS table."""
    if cpu_lines:
        print(f"\n{cpu_heading or CPU_HEADING}:")
        for line in cpu_lines:
            print("  " + line)
    if proxy_issues:
        print("\nPROXY ISSUES / PROXY LOG OUTPUT:")
        for issue in proxy_issues:
            print(issue)


def write_json(
    path: Path,
    metrics: list[Metric],
    cpu_lines: list[str],
    details: dict[str, Any],
    proxy_issues: list[str],
    **run: Any,
) -> None:
    """Everything the run measured, with `run` (mode, cores, client, seconds, error)."""
    payload = {
        **run,
        "metrics": [asdict(m) for m in metrics],
        "cpu": cpu_lines,
        "details": details,
        "proxy_issues": proxy_issues,
    }
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
