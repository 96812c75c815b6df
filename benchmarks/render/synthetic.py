"""A realistic cache for the render benchmark, written straight through `ContentStore` and
linked the way the proxy links what it caches: `put_bytes` for manifests and blobs,
`link_manifest` for every manifest (and an index's children), `link_blob` for configs and
layers, `write_tag` with a fixed `confirmed_at` so the site is deterministic.

Shape: N / 10 repositories over three upstream prefixes (docker.io, ghcr.io, quay.io; one to
three name components), 10 tags each ("latest" in half the repositories). ~96 % are
single-platform OCI images with a realistic config and 2-3 tiny layer blobs (one shared
base layer per upstream family plus unique ones, so the blob count `stats.html` scans is
realistic); ~2 % are multi-arch OCI indexes (linux/amd64 + linux/arm64); ~2 % are SIF
artifacts (Apptainer's ORAS layout), a handful of distinct SIF files from
`tests/support/sifwriter.py` shared across tags. About 10 % of tags get pull counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from mirror.cache.open_cache import open_node_db
from mirror.cache.pulls import PullStats, node_name
from mirror.cache.store import ContentStore, TagRecord
from mirror.reference import Digest, Repository
from tests.support.oci import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_TAR_GZIP,
    OCI_MANIFEST,
    SIF_CONFIG,
    SIF_LAYER,
    descriptor_for,
)

LABEL = "org.opencontainers.image."
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)  # creation dates count from here
PREFIXES = ("docker.io", "ghcr.io", "quay.io")
CONFIRMED_AT = 1_767_225_600.0  # 2026-01-01T00:00:00Z, fixed so the site is deterministic
SIF_FILES = 5  # distinct SIF files, shared by every SIF tag
SEED = 20260101

ORGS = (
    "library",
    "bioconda",
    "nvidia",
    "hpc",
    "spack",
    "opensciencegrid",
    "rocm",
    "intel",
    "jupyter",
    "biocontainers",
    "eessi",
    "ecmwf",
    "nfcore",
    "lammps",
    "openfoam",
)
TOOLS = (
    "python",
    "gromacs",
    "openmpi",
    "cuda",
    "samtools",
    "bwa",
    "pytorch",
    "tensorflow",
    "julia",
    "r-base",
    "lammps",
    "namd",
    "paraview",
    "quantum-espresso",
    "cp2k",
    "wrf",
    "blast",
    "star",
    "salmon",
    "gatk",
    "alpine",
    "ubuntu",
    "rockylinux",
    "busybox",
    "nginx",
    "postgres",
    "redis",
    "spark",
    "dask",
    "jax",
    "hdf5",
    "netcdf",
    "petsc",
    "trilinos",
    "openfoam",
    "fenics",
    "vasp-tools",
    "orca-tools",
    "nextflow",
    "snakemake",
)
VARIANTS = ("", "-dev", "-runtime", "-slim", "-cuda", "-rocm", "-mpi", "-gpu", "-cli", "-lite")
GROUPS = ("apps", "base", "ci", "tools", "lab")
HISTORY = (
    "/bin/sh -c #(nop) ADD file:{h} in / ",
    '/bin/sh -c #(nop)  CMD ["/bin/bash"]',
    "RUN /bin/sh -c apt-get update && apt-get install -y --no-install-recommends "
    "ca-certificates curl libgomp1 && rm -rf /var/lib/apt/lists/* # buildkit",
    "ENV TOOL_HOME=/opt/{tool} PATH=/opt/{tool}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
    "/usr/bin:/sbin:/bin",
    "COPY /opt/{tool} /opt/{tool} # buildkit",
    "RUN /bin/sh -c useradd --create-home --uid 1000 runner # buildkit",
    "WORKDIR /work",
    "LABEL org.opencontainers.image.source=https://github.com/{org}/{tool}",
)


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def sha256(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest())


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class CacheShape:
    """What was synthesised, and how long it took (not timed as part of any render)."""

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

    def image_config(
        self, repo: Repository, tag: str, arch: str, created: datetime, layers: list[bytes]
    ) -> bytes:
        rng = self.rng
        tool = repo.name.rsplit("/", 1)[-1]
        org = repo.name.split("/")[0]
        steps = rng.randint(3, 5)
        history = []
        for step in range(steps):
            text = HISTORY[(step * 3 + len(tool)) % len(HISTORY)] if step else HISTORY[0]
            entry: dict[str, Any] = {
                "created": iso(created - timedelta(minutes=10 * (steps - step))),
                "created_by": text.format(
                    h=hashlib.sha1(f"{repo}{tag}{step}".encode()).hexdigest(), tool=tool, org=org
                ),
            }
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
                "Env": [
                    f"PATH=/opt/{tool}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                    "/usr/bin:/sbin:/bin",
                    "LANG=C.UTF-8",
                    f"{tool.upper().replace('-', '_')}_VERSION={version}",
                    "OMP_NUM_THREADS=1",
                ],
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
                    LABEL + "licenses": rng.choice(
                        ("Apache-2.0", "MIT", "GPL-3.0-or-later", "BSD-3-Clause")
                    ),
                    LABEL + "vendor": org,
                    LABEL + "url": f"https://{org}.example.org/{tool}",
                },
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": [
                    f"sha256:{hashlib.sha256(b'diff' + layer).hexdigest()}" for layer in layers
                ],
            },
            "history": history,
        }
        return compact(config)

    def image_manifest(
        self, repo: Repository, tag: str, arch: str, created: datetime
    ) -> tuple[bytes, list[Digest]]:
        """An image manifest whose config and layers are stored; returns it and its blobs."""
        self._counter += 1
        family = PREFIXES.index(repo.prefix) * 4 + self._counter % 4
        layers = [f"base layer {family} {arch}\n".encode() * 8]
        for k in range(self.rng.randint(1, 2)):
            layers.append(f"layer {repo} {tag} {arch} {k} {self._counter}\n".encode() * 4)
        config = self.image_config(repo, tag, arch, created, layers)
        blobs = [self.put(config)] + [self.put(layer) for layer in layers]
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor_for(OCI_CONFIG, config),
            "layers": [descriptor_for(OCI_LAYER_TAR_GZIP, layer) for layer in layers],
        }
        if self._counter % 3 == 0:
            manifest["annotations"] = {
                LABEL + "created": iso(created),
                LABEL + "base.name": "docker.io/library/ubuntu:24.04",
            }
        return compact(manifest), blobs

    def sif_manifest(
        self, repo: Repository, tag: str, created: datetime
    ) -> tuple[bytes, list[Digest]]:
        sif = self._sifs[self._counter % len(self._sifs)]
        self._counter += 1
        config = b"{}"
        blobs = [self.put(config), self.put(sif)]
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor_for(SIF_CONFIG, config),
            "layers": [
                descriptor_for(SIF_LAYER, sif, annotations={LABEL + "title": f"image-{tag}.sif"})
            ],
            "annotations": {LABEL + "created": iso(created), LABEL + "ref.name": f"{repo}:{tag}"},
        }
        return compact(manifest), blobs

    def build_sifs(self) -> None:
        from tests.support.sifwriter import example_sif, make_squashfs

        sq_dir = self.workdir / "squashfs"
        sq_dir.mkdir()
        squashfs = make_squashfs(sq_dir)
        shutil.rmtree(sq_dir)
        for i in range(SIF_FILES):
            self._sifs.append(
                example_sif(
                    squashfs,
                    name=f"tool{i}",
                    version=f"{i}.0",
                    arch="amd64" if i % 4 else "arm64",
                    created=1_700_000_000 + i * 86_400,
                    signed=i % 2 == 0,
                ).data
            )

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
                children.append(
                    descriptor_for(
                        OCI_MANIFEST,
                        body,
                        platform={
                            "architecture": arch,
                            "os": "linux",
                            **({"variant": "v8"} if arch == "arm64" else {}),
                        },
                    )
                )
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
        repos: list[Repository] = []
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
                    kind = "index" if n % 50 == 7 else "sif" if n % 50 == 23 else "image"
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
def fsync_disabled(enabled: bool) -> Iterator[None]:
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
