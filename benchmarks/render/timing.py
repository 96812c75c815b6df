"""The timed part of the render benchmark: a config over the synthetic cache, renders
timed in-process (a full render into an empty directory, a re-render with nothing changed,
an incremental render after one new tag) and one `mirror render` CLI run."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import REPO_ROOT, BenchError, log
from benchmarks.render.report import Metric, Run
from benchmarks.render.synthetic import EPOCH, CacheShape, Synthesiser, fsync_disabled
from mirror import config as config_module
from mirror.cache.store import ContentStore
from mirror.catalog.render import RenderReport, render
from mirror.reference import Repository
from tests.support.proxy import toml_text

PYTHON = sys.executable
FULL_TARGET = 10.0
INCREMENTAL_TARGET = 1.0


class RenderBench:
    """A synthetic cache, a config over it, and the timed renders of it."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.cache_root = workdir / "cache"
        self.index_dir = workdir / "index"
        self.out = workdir / "site"
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(
            toml_text(
                {
                    "cache": {"root": str(self.cache_root), "index_dir": str(self.index_dir)},
                    "catalog": {
                        "mirror_url": "mirror.site:5000",
                        "title": "hpc-mirror benchmark",
                        "out": str(self.out),
                    },
                }
            )
        )
        self.config = config_module.load(self.config_path)
        self.store = ContentStore(self.cache_root)
        self.synth = Synthesiser(self.store, workdir)
        self.repos: list[Repository] = []
        self.metrics: list[Metric] = []
        self.new_tags = 0
        self.last_report: RenderReport | None = None
        self.base_shape = CacheShape()

    def reset_output(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)

    def add_new_tag(self) -> tuple[Repository, str]:
        """One new image tag in one repository, as if a user had just pulled it."""
        repo = self.repos[len(self.repos) // 2 + self.new_tags % 3]
        tag = f"2026.{self.new_tags + 1}"
        self.new_tags += 1
        self.synth.add_tag(repo, tag, "image", EPOCH + timedelta(days=700 + self.new_tags))
        return repo, tag

    def timed_render(self) -> Run:
        started = time.perf_counter()
        report = render(self.config, self.out)
        seconds = time.perf_counter() - started
        self.last_report = report
        return Run(seconds, report.pages_written, report.pages_reused)

    def measure(self, metric: Metric, prepare: Callable[[], Any], repeat: int) -> Metric:
        for i in range(repeat):
            prepare()
            run = self.timed_render()
            metric.runs.append(run)
            log(
                f"  {metric.label}: {run.seconds:.3f} s ({run.pages_written} written, "
                f"{run.pages_reused} reused)" + (f" [{i + 1}/{repeat}]" if repeat > 1 else "")
            )
        self.metrics.append(metric)
        return metric

    def synthesise(self) -> None:
        log(
            f"synthesising {self.args.tags} tags in {self.cache_root} "
            f"({'with' if self.args.fsync else 'without'} fsync)"
        )
        with fsync_disabled(self.args.fsync):
            self.repos = self.synth.build(
                self.args.tags, self.args.tags_per_repo, self.config.cache.index_dir
            )
        s = self.base_shape = dataclasses.replace(self.synth.shape)
        log(
            f"  {s.repositories} repositories, {s.tags} tags ({s.images} images, "
            f"{s.indexes} multi-arch indexes, {s.sifs} SIF), {s.manifests} manifests, "
            f"{s.blobs} blobs, {s.pulled_tags} tags with pulls; {s.seconds:.1f} s"
        )

    def run(self) -> list[Metric]:
        self.synthesise()
        repeat = self.args.repeat
        self.measure(
            Metric("full_cold", "full render, cold (empty output directory)", target=FULL_TARGET),
            self.reset_output,
            1,
        )
        cold = self.last_report
        assert cold is not None
        log(
            f"  site: {cold.repositories} repositories, {cold.tags} tags, "
            f"{count_files(self.out)} files, {du(self.out) / 2**20:.1f} MiB"
        )
        self.measure(Metric("unchanged", "re-render, nothing changed"), lambda: None, repeat)
        self.measure(
            Metric("incremental", "incremental render after 1 new tag", target=INCREMENTAL_TARGET),
            self.add_new_tag,
            repeat,
        )
        if not self.args.no_cli:
            self.metrics.append(self.cli_render())
        return self.metrics

    def cli_render(self) -> Metric:
        self.add_new_tag()
        command = [PYTHON, "-m", "mirror.cli", "render", "--config", str(self.config_path)]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise BenchError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
        written = reused = 0
        text = done.stdout.strip()
        with contextlib.suppress(ValueError, IndexError):
            tail = text.rsplit("(", 1)[1]
            written = int(tail.split(" files written")[0])
            reused = int(tail.split(", ")[1].split(" pages")[0])
        # Interpreter start plus imports, for reference.
        started = time.perf_counter()
        subprocess.run(
            [PYTHON, "-c", "import mirror.cli, mirror.catalog"],
            cwd=REPO_ROOT,
            check=True,
            timeout=60,
        )
        imports = time.perf_counter() - started
        metric = Metric(
            "cli_incremental",
            "CLI `mirror render` after 1 new tag (wall)",
            [Run(seconds, written, reused)],
            INCREMENTAL_TARGET,
            note=f"interpreter start + imports alone: {imports:.3f} s",
        )
        log(
            f"  {metric.label}: {seconds:.3f} s ({written} written, {reused} reused); "
            f"{metric.note}; stdout: {text}"
        )
        return metric

    def prepare(self, which: str) -> None:
        """Set up scenario `which` (full_cold or incremental) once more, for a profile."""
        if which == "full_cold":
            self.reset_output()
        else:
            self.add_new_tag()


def count_files(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def du(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
