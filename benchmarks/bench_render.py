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
import contextlib
import cProfile
import dataclasses
import hashlib
import io
import json
import os
import platform
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from benchmarks import watchdog  # noqa: E402
from benchmarks.watchdog import Timeout  # noqa: E402
from mirror import config as config_module  # noqa: E402
from mirror.cache.open_cache import open_node_db  # noqa: E402
from mirror.cache.pulls import PullStats, node_name  # noqa: E402
from mirror.cache.store import ContentStore, TagRecord  # noqa: E402
from mirror.catalog import gather as gather_module  # noqa: E402
from mirror.catalog import pages as pages_module  # noqa: E402
from mirror.catalog import render as catalog_module  # noqa: E402
from mirror.catalog import site_writer as sitewriter_module  # noqa: E402
from mirror.catalog.render import RenderReport, render  # noqa: E402
from mirror.reference import Digest, Repository  # noqa: E402

PYTHON = sys.executable
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
SIF_CONFIG = "application/vnd.sylabs.sif.config.v1+json"
SIF_LAYER = "application/vnd.sylabs.sif.layer.v1.sif"
LABEL = "org.opencontainers.image."

PREFIXES = ("docker.io", "ghcr.io", "quay.io")
CONFIRMED_AT = 1_767_225_600.0  # 2026-01-01T00:00:00Z, fixed so the site is deterministic
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
SIF_FILES = 5  # distinct SIF files, shared by every SIF tag
FULL_TARGET = 10.0
INCREMENTAL_TARGET = 1.0
SEED = 20260101
PY_SPY_RATE = 100  # samples per second

ORGS = ("library", "bioconda", "nvidia", "hpc", "spack", "opensciencegrid", "rocm",
        "intel", "jupyter", "biocontainers", "eessi", "ecmwf", "nfcore", "lammps", "openfoam")
TOOLS = ("python", "gromacs", "openmpi", "cuda", "samtools", "bwa", "pytorch", "tensorflow",
         "julia", "r-base", "lammps", "namd", "paraview", "quantum-espresso", "cp2k", "wrf",
         "blast", "star", "salmon", "gatk", "alpine", "ubuntu", "rockylinux", "busybox",
         "nginx", "postgres", "redis", "spark", "dask", "jax", "hdf5", "netcdf", "petsc",
         "trilinos", "openfoam", "fenics", "vasp-tools", "orca-tools", "nextflow", "snakemake")
VARIANTS = ("", "-dev", "-runtime", "-slim", "-cuda", "-rocm", "-mpi", "-gpu", "-cli", "-lite")
GROUPS = ("apps", "base", "ci", "tools", "lab")
HISTORY = (
    "/bin/sh -c #(nop) ADD file:{h} in / ",
    "/bin/sh -c #(nop)  CMD [\"/bin/bash\"]",
    "RUN /bin/sh -c apt-get update && apt-get install -y --no-install-recommends "
    "ca-certificates curl libgomp1 && rm -rf /var/lib/apt/lists/* # buildkit",
    "ENV TOOL_HOME=/opt/{tool} PATH=/opt/{tool}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
    "/usr/bin:/sbin:/bin",
    "COPY /opt/{tool} /opt/{tool} # buildkit",
    "RUN /bin/sh -c useradd --create-home --uid 1000 runner # buildkit",
    "WORKDIR /work",
    "LABEL org.opencontainers.image.source=https://github.com/{org}/{tool}",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def sha256(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": str(sha256(data)), "size": len(data), **extra}


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------------------

@dataclass
class CacheShape:
    repositories: int = 0
    tags: int = 0
    images: int = 0
    indexes: int = 0
    sifs: int = 0
    manifests: int = 0
    blobs: int = 0
    pulled_tags: int = 0
    seconds: float = 0.0


class Synthesiser:
    """Writes a realistic cache through ContentStore the way the proxy would link it."""

    def __init__(self, store: ContentStore, workdir: Path, seed: int = SEED) -> None:
        self.store = store
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.shape = CacheShape()
        self._stored: set[str] = set()
        self._sifs: list[bytes] = []
        self._counter = 0

    # -- content -----------------------------------------------------------------------
    def put(self, data: bytes) -> Digest:
        digest = sha256(data)
        if digest.hex not in self._stored:
            self.store.put_bytes(digest, data)
            self._stored.add(digest.hex)
            self.shape.blobs += 1
        return digest

    def image_config(self, repo: Repository, tag: str, arch: str, created: datetime,
                     layers: list[bytes]) -> bytes:
        rng = self.rng
        tool = repo.name.rsplit("/", 1)[-1]
        org = repo.name.split("/")[0]
        steps = rng.randint(3, 5)
        history = []
        for step in range(steps):
            text = HISTORY[(step * 3 + len(tool)) % len(HISTORY)] if step else HISTORY[0]
            entry: dict[str, Any] = {
                "created": iso(created - timedelta(minutes=10 * (steps - step))),
                "created_by": text.format(h=hashlib.sha1(f"{repo}{tag}{step}".encode())
                                          .hexdigest(), tool=tool, org=org)}
            if text.startswith(("ENV", "WORKDIR", "LABEL", "/bin/sh -c #(nop)  CMD")):
                entry["empty_layer"] = True
            if step == steps - 1:
                entry["comment"] = "buildkit.dockerfile.v0"
            history.append(entry)
        version = tag if tag != "latest" else "9.9.9"
        config = {
            "architecture": arch,
            "os": "linux",
            **({"variant": "v8"} if arch == "arm64" else {}),
            "created": iso(created),
            "author": f"{org} maintainers <ops@{org}.example.org>",
            "config": {
                "User": "1000:1000" if rng.random() < 0.3 else "",
                "Env": [f"PATH=/opt/{tool}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                        "/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                        f"{tool.upper().replace('-', '_')}_VERSION={version}",
                        "OMP_NUM_THREADS=1"],
                "Entrypoint": ["/usr/local/bin/entrypoint.sh"] if rng.random() < 0.4 else None,
                "Cmd": [f"/opt/{tool}/bin/{tool}", "--help"],
                "WorkingDir": "/work",
                "Labels": {
                    LABEL + "title": tool,
                    LABEL + "description": f"{tool} {version} for HPC clusters, built by {org}",
                    LABEL + "version": version,
                    LABEL + "created": iso(created),
                    LABEL + "source": f"https://github.com/{org}/{tool}",
                    LABEL + "revision": hashlib.sha1(f"{repo}:{tag}".encode()).hexdigest(),
                    LABEL + "licenses": rng.choice(("Apache-2.0", "MIT", "GPL-3.0-or-later",
                                                    "BSD-3-Clause")),
                    LABEL + "vendor": org,
                    LABEL + "url": f"https://{org}.example.org/{tool}",
                },
            },
            "rootfs": {"type": "layers",
                       "diff_ids": [f"sha256:{hashlib.sha256(b'diff' + layer).hexdigest()}"
                                    for layer in layers]},
            "history": history,
        }
        return compact(config)

    def image_manifest(self, repo: Repository, tag: str, arch: str,
                       created: datetime) -> tuple[bytes, list[Digest]]:
        """An image manifest whose config and layers are stored; returns it and its blobs."""
        self._counter += 1
        family = PREFIXES.index(repo.prefix) * 4 + self._counter % 4
        layers = [f"base layer {family} {arch}\n".encode() * 8]
        for k in range(self.rng.randint(1, 2)):
            layers.append(f"layer {repo} {tag} {arch} {k} {self._counter}\n".encode() * 4)
        config = self.image_config(repo, tag, arch, created, layers)
        blobs = [self.put(config)] + [self.put(layer) for layer in layers]
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": descriptor(OCI_CONFIG, config),
                    "layers": [descriptor(OCI_LAYER_GZIP, layer) for layer in layers]}
        if self._counter % 3 == 0:
            manifest["annotations"] = {LABEL + "created": iso(created),
                                       LABEL + "base.name": "docker.io/library/ubuntu:24.04"}
        return compact(manifest), blobs

    def sif_manifest(self, repo: Repository, tag: str,
                     created: datetime) -> tuple[bytes, list[Digest]]:
        sif = self._sifs[self._counter % len(self._sifs)]
        self._counter += 1
        config = b"{}"
        blobs = [self.put(config), self.put(sif)]
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": descriptor(SIF_CONFIG, config),
                    "layers": [descriptor(SIF_LAYER, sif, annotations={
                        LABEL + "title": f"image-{tag}.sif"})],
                    "annotations": {LABEL + "created": iso(created),
                                    LABEL + "ref.name": f"{repo}:{tag}"}}
        return compact(manifest), blobs

    def build_sifs(self) -> None:
        from tests.support.sifwriter import example_sif, make_squashfs
        sq_dir = self.workdir / "squashfs"
        sq_dir.mkdir()
        squashfs = make_squashfs(sq_dir)
        shutil.rmtree(sq_dir)
        for i in range(SIF_FILES):
            self._sifs.append(example_sif(squashfs, name=f"tool{i}", version=f"{i}.0",
                                          arch="amd64" if i % 4 else "arm64",
                                          created=1_700_000_000 + i * 86_400,
                                          signed=i % 2 == 0).data)

    # -- linking -------------------------------------------------------------------------
    def add_tag(self, repo: Repository, tag: str, kind: str, created: datetime) -> Digest:
        """Store and link one tag of `kind` (image, index or sif) like the proxy would."""
        store = self.store
        if kind == "index":
            children = []
            for arch in ("amd64", "arm64"):
                body, blobs = self.image_manifest(repo, tag, arch, created)
                child = self.put(body)
                store.link_manifest(repo, child, OCI_MANIFEST)
                for blob in blobs:
                    store.link_blob(repo, blob)
                children.append(descriptor(OCI_MANIFEST, body, platform={
                    "architecture": arch, "os": "linux",
                    **({"variant": "v8"} if arch == "arm64" else {})}))
                self.shape.manifests += 1
            body = compact({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
            media_type = OCI_INDEX
            self.shape.indexes += 1
        else:
            if kind == "sif":
                body, blobs = self.sif_manifest(repo, tag, created)
                self.shape.sifs += 1
            else:
                body, blobs = self.image_manifest(repo, tag, "amd64", created)
                self.shape.images += 1
            for blob in blobs:
                store.link_blob(repo, blob)
            media_type = OCI_MANIFEST
        digest = self.put(body)
        store.link_manifest(repo, digest, media_type)
        store.write_tag(repo, tag, TagRecord(digest, media_type, CONFIRMED_AT))
        self.shape.manifests += 1
        self.shape.tags += 1
        return digest

    def repositories(self, count: int) -> list[Repository]:
        names: set[tuple[str, str]] = set()
        repos = []
        i = 0
        while len(repos) < count:
            prefix = PREFIXES[i % len(PREFIXES)]
            org = ORGS[(i * 7 + i // 41) % len(ORGS)]
            tool = TOOLS[(i * 11 + i // 13) % len(TOOLS)] + VARIANTS[(i // 17) % len(VARIANTS)]
            if prefix == "ghcr.io" and i % 5 == 0:
                name = f"{org}/{GROUPS[i % len(GROUPS)]}/{tool}"
            elif prefix == "docker.io" and i % 4 == 0:
                name = f"library/{tool}"
            else:
                name = f"{org}/{tool}"
            if (prefix, name) in names:
                name = f"{name}{len(repos)}"
            names.add((prefix, name))
            repos.append(Repository(prefix, name))
            i += 1
        return sorted(repos, key=str)

    def build(self, tags: int, tags_per_repo: int, index_dir: Path) -> list[Repository]:
        started = time.perf_counter()
        self.build_sifs()
        repos = self.repositories(max(1, -(-tags // tags_per_repo)))
        self.shape.repositories = len(repos)
        db = open_node_db(index_dir)
        pulls = PullStats(db, self.store, node_name(index_dir))
        try:
            n = 0
            for r, repo in enumerate(repos):
                per_repo = min(tags_per_repo, tags - n)
                names = [f"{1 + k // 4}.{k % 4}" for k in range(per_repo)]
                if r % 2 == 0 and names:
                    names[-1] = "latest"
                for k, tag in enumerate(names):
                    kind = ("index" if n % 50 == 7 else "sif" if n % 50 == 23 else "image")
                    created = EPOCH + timedelta(days=r % 300, hours=k * 7, minutes=n % 60)
                    self.add_tag(repo, tag, kind, created)
                    if n % 10 == 3:
                        for _ in range(1 + n % 7):
                            pulls.record(repo, tag)
                        self.shape.pulled_tags += 1
                    n += 1
                if n >= tags:
                    break
            pulls.flush()
        finally:
            pulls.close()
            db.close()
        self.shape.seconds = time.perf_counter() - started
        return repos


@contextlib.contextmanager
def fsync_disabled(enabled: bool):
    """Skip fsync while synthesising (not measured; the temp dir needs no durability)."""
    if enabled:
        yield
        return
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------

@dataclass
class Run:
    seconds: float
    pages_written: int
    pages_reused: int


@dataclass
class Metric:
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
        return {"metric": self.key, "label": self.label, "seconds": round(self.seconds, 4),
                "samples": [round(r.seconds, 4) for r in self.runs], "target": self.target,
                "status": self.status, "pages_written": run.pages_written,
                "pages_reused": run.pages_reused, "note": self.note}


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.cache_root = workdir / "cache"
        self.index_dir = workdir / "index"
        self.out = workdir / "site"
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(
            "[cache]\n"
            f'root = "{self.cache_root}"\n'
            f'index_dir = "{self.index_dir}"\n'
            "[catalog]\n"
            'mirror_url = "mirror.site:5000"\n'
            'title = "hpc-mirror benchmark"\n'
            f'out = "{self.out}"\n')
        self.config = config_module.load(self.config_path)
        self.store = ContentStore(self.cache_root)
        self.synth = Synthesiser(self.store, workdir)
        self.repos: list[Repository] = []
        self.metrics: list[Metric] = []
        self.new_tags = 0
        self.last_report: RenderReport | None = None
        self.base_shape = CacheShape()

    # -- helpers -------------------------------------------------------------------------
    def reset_output(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)

    def add_new_tag(self) -> tuple[Repository, str]:
        """One new image tag in one repository, as if a user had just pulled it."""
        repo = self.repos[len(self.repos) // 2 + self.new_tags % 3]
        tag = f"2026.{self.new_tags + 1}"
        self.new_tags += 1
        self.synth.add_tag(repo, tag, "image",
                           EPOCH + timedelta(days=700 + self.new_tags))
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
            log(f"  {metric.label}: {run.seconds:.3f} s ({run.pages_written} written, "
                f"{run.pages_reused} reused)" + (f" [{i + 1}/{repeat}]" if repeat > 1 else ""))
        self.metrics.append(metric)
        return metric

    # -- the benchmark -------------------------------------------------------------------
    def synthesise(self) -> None:
        log(f"synthesising {self.args.tags} tags in {self.cache_root} "
            f"({'with' if self.args.fsync else 'without'} fsync)")
        with fsync_disabled(self.args.fsync):
            self.repos = self.synth.build(self.args.tags, self.args.tags_per_repo,
                                          self.config.cache.index_dir)
        s = self.base_shape = dataclasses.replace(self.synth.shape)
        log(f"  {s.repositories} repositories, {s.tags} tags ({s.images} images, "
            f"{s.indexes} multi-arch indexes, {s.sifs} SIF), {s.manifests} manifests, "
            f"{s.blobs} blobs, {s.pulled_tags} tags with pulls; {s.seconds:.1f} s")

    def run(self) -> list[Metric]:
        self.synthesise()
        repeat = self.args.repeat
        self.measure(Metric("full_cold", "full render, cold (empty output directory)",
                            target=FULL_TARGET),
                     self.reset_output, 1)
        cold = self.last_report
        log(f"  site: {cold.repositories} repositories, {cold.tags} tags, "
            f"{count_files(self.out)} files, {du(self.out) / 2**20:.1f} MiB")
        self.measure(Metric("unchanged", "re-render, nothing changed"), lambda: None, repeat)
        self.measure(Metric("incremental", "incremental render after 1 new tag",
                            target=INCREMENTAL_TARGET), self.add_new_tag, repeat)
        if not self.args.no_cli:
            self.metrics.append(self.cli_render())
        return self.metrics

    def cli_render(self) -> Metric:
        self.add_new_tag()
        command = [PYTHON, "-m", "mirror.cli", "render", "--config", str(self.config_path)]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=240)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
        written = reused = 0
        text = done.stdout.strip()
        with contextlib.suppress(ValueError, IndexError):
            tail = text.rsplit("(", 1)[1]
            written = int(tail.split(" files written")[0])
            reused = int(tail.split(", ")[1].split(" pages")[0])
        # Interpreter start plus imports, for reference.
        started = time.perf_counter()
        subprocess.run([PYTHON, "-c", "import mirror.cli, mirror.catalog"], cwd=REPO_ROOT,
                       check=True, timeout=60)
        imports = time.perf_counter() - started
        metric = Metric("cli_incremental", "CLI `mirror render` after 1 new tag (wall)",
                        [Run(seconds, written, reused)], INCREMENTAL_TARGET,
                        note=f"interpreter start + imports alone: {imports:.3f} s")
        log(f"  {metric.label}: {seconds:.3f} s ({written} written, {reused} reused); "
            f"{metric.note}; stdout: {text}")
        return metric

    # -- profiling -----------------------------------------------------------------------
    def prepare_profile(self, which: str) -> None:
        if which == "full_cold":
            self.reset_output()
        else:
            self.add_new_tag()

    def profile(self, which: str, tool: str) -> dict[str, Any]:
        """Profile one render of scenario `which` (full_cold or incremental) with py-spy
        (sampling a child process, idle frames included so filesystem waits count) or
        cProfile (in-process, deterministic but ~2-3x slower). Both record phase times."""
        self.prepare_profile(which)
        if tool == "py-spy":
            return self._profile_py_spy(which)
        return self._profile_cprofile(which)

    def _profile_cprofile(self, which: str) -> dict[str, Any]:
        phases = PhaseTimer()
        profiler = cProfile.Profile()
        with phases.installed():
            started = time.perf_counter()
            profiler.enable()
            try:
                report = render(self.config, self.out)
            finally:
                profiler.disable()
            total = time.perf_counter() - started
        stats = pstats.Stats(profiler, stream=io.StringIO())
        return {"scenario": which, "tool": "cProfile", "seconds_profiled": round(total, 3),
                "pages_written": report.pages_written, "pages_reused": report.pages_reused,
                "phases": phases.table(), "top_cumulative": top(stats, "cumulative", 28),
                "top_own": top(stats, "tottime", 22)}

    def _profile_py_spy(self, which: str) -> dict[str, Any]:
        raw = self.workdir / f"py-spy-{which}.txt"
        child_out = self.workdir / f"profile-child-{which}.json"
        command = [py_spy_path(), "record", "--idle", "--rate", str(PY_SPY_RATE),
                   "--format", "raw", "--output", str(raw), "--",
                   PYTHON, str(Path(__file__).resolve()), "--profile-child",
                   str(self.config_path), str(child_out)]
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=240)
        if done.returncode != 0 or not child_out.exists():
            raise RuntimeError(f"py-spy exited {done.returncode}:\n{done.stderr[-2000:]}")
        child = json.loads(child_out.read_text())
        own, cumulative, samples = collapse(raw.read_text())
        per_sample = 1.0 / PY_SPY_RATE
        return {"scenario": which, "tool": f"py-spy ({samples} samples at {PY_SPY_RATE} Hz, "
                "idle frames included)", "seconds_profiled": child["seconds"],
                "pages_written": child["pages_written"], "pages_reused": child["pages_reused"],
                "phases": child["phases"],
                "top_cumulative": [{"function": f, "calls": None, "own": round(
                    own_by_function(own).get(f, 0) * per_sample, 3),
                    "cumulative": round(n * per_sample, 3)}
                    for f, n in cumulative.most_common() if "bench_render.py" not in f][:28],
                "top_own": [{"function": f, "calls": None, "own": round(n * per_sample, 3),
                             "cumulative": None} for f, n in own.most_common(22)]}


def profile_child(config_path: str, out_path: str) -> int:
    """Body of the process py-spy samples: one render, with phase timings, as JSON."""
    config = config_module.load(config_path)
    phases = PhaseTimer()
    with phases.installed():
        started = time.perf_counter()
        report = render(config)
        seconds = time.perf_counter() - started
    Path(out_path).write_text(json.dumps({
        "seconds": round(seconds, 3), "pages_written": report.pages_written,
        "pages_reused": report.pages_reused, "phases": phases.table()}))
    return 0


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

    PHASES = (
        ("gather (model from the store)", catalog_module, "gather"),
        ("  store.list_repositories (glob)", catalog_module.ContentStore, "list_repositories"),
        ("  store.list_tags", catalog_module.ContentStore, "list_tags"),
        ("  store.read_tag", catalog_module.ContentStore, "read_tag"),
        ("  pulls.counts (diskcache get)", catalog_module.PullStats, "counts"),
        ("  FactsCache.get (per-render memo)", gather_module.FactsCache, "get"),
        ("    manifest_facts", gather_module, "manifest_facts"),
        ("render_repositories", catalog_module._Renderer, "render_repositories"),
        ("  fingerprint (page keys)", pages_module, "fingerprint"),
        ("  _dumps (repo.json, catalog.json)", pages_module, "_dumps"),
        ("  _page (reuse/render)", pages_module.Pages, "_page"),
        ("    SiteWriter.unchanged (fingerprint match)", sitewriter_module.SiteWriter,
         "unchanged"),
        ("    Template.render", None, None),
        ("    SiteWriter.write", sitewriter_module.SiteWriter, "write"),
        ("      SiteWriter._target (in unchanged+write)", sitewriter_module.SiteWriter, "_target"),
        ("  _stats -> _blob_totals (blob scan)", catalog_module, "_blob_totals"),
        ("  summarize", gather_module, "summarize"),
        ("SiteWriter.__init__ (read old state)", sitewriter_module.SiteWriter, "__init__"),
        ("SiteWriter.commit (delete removed files, state)", sitewriter_module.SiteWriter,
         "commit"),
    )

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def installed(self):
        import jinja2
        restore = []
        for label, owner, name in self.PHASES:
            if owner is None:
                owner, name = jinja2.Template, "render"
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
        return [{"phase": label, "seconds": round(self.totals[label][0], 3),
                 "calls": self.totals[label][1]} for label, _, _ in self.PHASES]


def top(stats: pstats.Stats, key: str, limit: int) -> list[dict[str, Any]]:
    rows = []
    for (filename, line, name), (_, nc, tt, ct, _) in stats.stats.items():  # type: ignore
        short = filename
        for marker in ("/site-packages/", "/lib/python3.11/", str(REPO_ROOT) + "/"):
            if marker in filename:
                short = filename.split(marker, 1)[1]
        rows.append({"function": f"{short}:{line}({name})" if line else name,
                     "calls": nc, "own": round(tt, 3), "cumulative": round(ct, 3)})
    field_name = "cumulative" if key == "cumulative" else "own"
    return sorted(rows, key=lambda r: -r[field_name])[:limit]


def count_files(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def du(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

def results_block(metrics: list[Metric], shape: CacheShape, load_before: tuple,
                  load_after: tuple) -> str:
    lines = [f"RESULTS  hpc-mirror catalog render: {shape.tags} tags in {shape.repositories} "
             f"repositories ({shape.indexes} multi-arch, {shape.sifs} SIF), "
             f"{os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
             f"{load_before[0]:.2f} before, {load_after[0]:.2f} after",
             f"{'metric':<48} {'seconds':>8}  {'target':>8}  {'status':<6} "
             f"{'written':>8} {'reused':>8}  samples"]
    for m in metrics:
        run = m.median_run()
        target = f"<= {m.target:g} s" if m.target is not None else "-"
        samples = ", ".join(f"{r.seconds:.3f}" for r in m.runs) if len(m.runs) > 1 else ""
        lines.append(f"{m.label:<48} {m.seconds:>8.3f}  {target:>8}  {m.status:<6} "
                     f"{run.pages_written:>8} {run.pages_reused:>8}  {samples}")
        if m.note:
            lines.append(f"{'':<50}({m.note})")
    lines.append("written = files written (pages, repo.json, catalog.json, assets) because "
                 "their inputs changed; reused = files left as the previous render wrote them")
    return "\n".join(lines)


def profile_block(profile: dict[str, Any]) -> str:
    def num(value: Any, unit: str = " s") -> str:
        return f"{value:>8.3f}{unit}" if isinstance(value, (int, float)) else f"{'':>8}{unit}"

    sampled = profile["tool"].startswith("py-spy")
    lines = [f"PROFILE  {profile['scenario']}: render took {profile['seconds_profiled']:.3f} s "
             f"while profiled by {profile['tool']} ({profile['pages_written']} written, "
             f"{profile['pages_reused']} reused)",
             "phases (wall time of wrapped functions; nested rows are included in the row "
             "above them):"]
    for row in profile["phases"]:
        lines.append(f"  {row['phase']:<54} {row['seconds']:>8.3f} s  {row['calls']:>7} calls")
    lines.append("top functions by cumulative time:")
    for row in profile["top_cumulative"]:
        calls = f"{row['calls']:>8}  " if row["calls"] is not None else ""
        lines.append(f"  {num(row['cumulative'])} cum {num(row['own'])} own  {calls}"
                     f"{row['function']}")
    lines.append("top " + ("source lines (innermost Python frame, C calls included)"
                           if sampled else "functions") + " by own time:")
    for row in profile["top_own"]:
        calls = f"{row['calls']:>8}  " if row["calls"] is not None else ""
        cumulative = f" {num(row['cumulative'])} cum" if row["cumulative"] is not None else ""
        lines.append(f"  {num(row['own'])} own{cumulative}  {calls}{row['function']}")
    return "\n".join(lines)


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
    parser.add_argument("--profiler", choices=("auto", "py-spy", "cprofile"), default="auto",
                        help="auto: py-spy if installed, else cProfile")
    parser.add_argument("--timeout", type=float, default=290,
                        help="abort after this long; profiles that would not fit are skipped")
    args = parser.parse_args(argv)
    if args.tags < 1 or args.tags_per_repo < 1 or args.repeat < 1:
        parser.error("--tags, --tags-per-repo and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--profile-child"]:
        return profile_child(*argv[1:3])
    args = parse_args(argv)
    parent = args.workdir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="hpc-mirror-bench-render-", dir=parent))

    watchdog.install(args.timeout)
    print(f"hpc-mirror render benchmark on {platform.node()}: {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, workdir {workdir}", flush=True)
    started = time.perf_counter()
    bench: Bench | None = None
    profiles: list[dict[str, Any]] = []
    skipped: list[str] = []
    skipped_runs: list[str] = []
    load_before = os.getloadavg()
    error = None
    try:
        bench = Bench(args, workdir)
        bench.run()
        missed = [m.key for m in bench.metrics if m.status == "MISS"]
        wanted = []
        if not args.no_profile:
            if args.profile or "incremental" in missed or "cli_incremental" in missed:
                wanted.append("incremental")
            if args.profile or "full_cold" in missed:
                wanted.append("full_cold")
        tool = args.profiler
        if tool == "auto":
            tool = "py-spy" if py_spy_path() else "cprofile"
        elif tool == "py-spy" and not py_spy_path():
            raise RuntimeError("py-spy not found (pip install py-spy into the venv)")
        for which in wanted:
            measured = next(m.seconds for m in bench.metrics if m.key == which)
            estimate = measured * (1.3 if tool == "py-spy" else 3.0) + 5
            left = args.timeout - (time.perf_counter() - started)
            if estimate > left - 10:
                skipped.append(f"{which} (needs ~{estimate:.0f} s, {left:.0f} s left of "
                               "--timeout)")
                log(f"skipping the {which} profile: {skipped[-1]}")
                continue
            log(f"profiling {which} with {tool}")
            profiles.append(bench.profile(which, tool))
    except (Timeout, KeyboardInterrupt, OSError, RuntimeError,
            subprocess.SubprocessError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        print(f"\nBENCHMARK ABORTED: {error}", file=sys.stderr, flush=True)
    finally:
        signal.alarm(0)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    if bench is None:
        return 2
    print()
    order = ["full_cold", "unchanged", "incremental", "cli_incremental"]
    bench.metrics.sort(key=lambda m: order.index(m.key))
    print(results_block(bench.metrics, bench.base_shape, load_before, os.getloadavg()))
    for note in skipped_runs:
        print(f"run skipped: {note}")
    for profile in profiles:
        print()
        print(profile_block(profile))
    for note in skipped:
        print(f"\nprofile skipped: {note}")
    print(f"\n(total benchmark time {elapsed:.1f} s, synthesis {bench.synth.shape.seconds:.1f} s)")
    if args.json:
        payload = {
            "benchmark": "render", "host": platform.node(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "tags_requested": args.tags,
            "cache": asdict(bench.base_shape), "tags_added_during_run": bench.new_tags,
            "targets": {"full_seconds": FULL_TARGET, "incremental_seconds": INCREMENTAL_TARGET},
            "results": [m.as_dict() for m in bench.metrics], "profiles": profiles,
            "profiles_skipped": skipped, "runs_skipped": skipped_runs,
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "error": error, "elapsed_seconds": round(elapsed, 2)}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {args.json}")
    if error:
        return 2
    return 1 if any(m.status == "MISS" for m in bench.metrics) else 0


if __name__ == "__main__":
    sys.exit(main())
