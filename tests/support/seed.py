"""Fill a real registry with a realistic set of images and artifacts through its HTTP API.

:class:`RegistryClient` is a small synchronous OCI distribution client (``requests``)
that pushes blobs and manifests and reads them back, handling anonymous, Basic and Bearer
auth the way docker/ggcr clients do. :func:`seed_all` pushes the standard test content
(OCI images, an OCI index, Docker schema2 images and a manifest list, four generations of
SIF artifacts and one 64 MiB + 1 byte blob) and returns a :class:`Seeded` record of
exactly what went in, so proxy tests can compare bytes and digests.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urljoin

import requests

from . import oci
from .sifwriter import ExampleSif, example_sif, make_squashfs

Body = bytes | Callable[[], Iterable[bytes]] | None


class RegistryError(RuntimeError):
    """The registry answered a seeding request with an unexpected status."""


def _challenge_params(header: str) -> tuple[str, dict[str, str]]:
    """Split ``Bearer realm="…",service="…"`` into the scheme and its parameters."""
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


class RegistryClient:
    """Push and fetch through the distribution API of one registry.

    Auth follows the challenge on the first 401: Basic reuses ``username``/``password``;
    Bearer fetches a token from the challenge's realm (with Basic credentials if given)
    for the scope of the request, and caches it per scope.
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 60.0,
        ca_file: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = (username, password or "") if username is not None else None
        self.timeout = timeout
        self.session = requests.Session()
        if ca_file is not None:  # an HTTPS registry whose CA the system does not trust
            self.session.verify = ca_file
            self.session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides `verify`
        self.session.headers["User-Agent"] = "hpc-mirror-tests-seed"
        self._scheme: str | None = None
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self.session.close()

    # --- auth -----------------------------------------------------------------------------

    def _auth_headers(self, scope: str) -> dict[str, str]:
        if self._scheme == "bearer" and scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        return {}

    def _auth_object(self) -> tuple[str, str] | None:
        return self.credentials if self._scheme == "basic" else None

    def _answer_challenge(self, response: requests.Response, scope: str) -> None:
        scheme, params = _challenge_params(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self.credentials is None:
                raise RegistryError("registry wants Basic auth but no credentials given")
            self._scheme = "basic"
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(f"unsupported challenge {response.headers!r}")
        query = {"service": params.get("service", "")}
        if scope or "scope" in params:  # our scope, else the one the registry named
            query["scope"] = scope or params["scope"]
        token_response = self.session.get(
            params["realm"], params=query, auth=self.credentials, timeout=self.timeout
        )
        if token_response.status_code != 200:
            raise RegistryError(f"token request failed: {token_response.status_code}")
        body = token_response.json()
        self._tokens[scope] = body.get("token") or body["access_token"]
        self._scheme = "bearer"

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: str = "",
        body: Body = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send a request, answering one auth challenge if the registry sends it.

        ``body`` is bytes or a zero-argument callable returning a fresh iterable of
        chunks (so it can be sent again after a challenge; chunks are streamed).
        """
        url = urljoin(self.base_url + "/", path_or_url)
        for attempt in range(2):
            data = body() if callable(body) else body
            response = self.session.request(
                method,
                url,
                data=data,
                headers={**(headers or {}), **self._auth_headers(scope)},
                auth=self._auth_object(),
                timeout=self.timeout,
                stream=stream,
                allow_redirects=True,
            )
            if response.status_code != 401 or attempt == 1:
                return response
            response.close()
            self._answer_challenge(response, scope)
        raise AssertionError("unreachable")

    # --- push -----------------------------------------------------------------------------

    @staticmethod
    def push_scope(name: str) -> str:
        return f"repository:{name}:pull,push"

    def blob_exists(self, name: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{name}/blobs/{digest}", scope=self.push_scope(name))
        return response.status_code == 200

    def push_blob(
        self,
        name: str,
        data: bytes | oci.StreamedBlob,
        media_type: str = "application/octet-stream",
    ) -> dict[str, Any]:
        """Upload a blob monolithically (POST, then PUT with the digest) unless the
        registry already has it; return its descriptor.

        A :class:`~tests.support.oci.StreamedBlob` is streamed, never held in memory.
        """
        body: Body
        if isinstance(data, bytes):
            digest, size, body = oci.sha256_digest(data), len(data), data
        else:
            digest, size, body = data.digest, data.size, data.chunks
        scope = self.push_scope(name)
        if not self.blob_exists(name, digest):
            started = self.request("POST", f"/v2/{name}/blobs/uploads/", scope=scope)
            self._expect(started, 202, f"start upload to {name}")
            location = urljoin(self.base_url + "/", started.headers["Location"])
            separator = "&" if "?" in location else "?"
            finished = self.request(
                "PUT",
                f"{location}{separator}digest={digest}",
                scope=scope,
                body=body,
                headers={"Content-Type": "application/octet-stream"},
            )
            self._expect(finished, 201, f"finish upload of {digest} to {name}")
        return oci.descriptor(media_type, digest, size)

    def push_manifest(self, name: str, reference: str, manifest: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or digest; return its digest (checked against the
        registry's ``Docker-Content-Digest``)."""
        response = self.request(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            scope=self.push_scope(name),
            body=manifest,
            headers={"Content-Type": media_type},
        )
        self._expect(response, 201, f"push manifest {name}:{reference}")
        digest = oci.sha256_digest(manifest)
        if response.headers.get("Docker-Content-Digest") != digest:
            raise RegistryError(f"registry digest {response.headers!r} differs from {digest}")
        return digest

    # --- read -----------------------------------------------------------------------------

    def get_manifest(
        self, name: str, reference: str, accept: str = oci.ACCEPT_ALL_MANIFESTS
    ) -> requests.Response:
        return self.request(
            "GET",
            f"/v2/{name}/manifests/{reference}",
            scope=f"repository:{name}:pull",
            headers={"Accept": accept},
        )

    def get_blob(self, name: str, digest: str, *, stream: bool = False) -> requests.Response:
        return self.request(
            "GET", f"/v2/{name}/blobs/{digest}", scope=f"repository:{name}:pull", stream=stream
        )

    @staticmethod
    def _expect(response: requests.Response, status: int, what: str) -> None:
        if response.status_code != status:
            raise RegistryError(
                f"{what}: expected {status}, got {response.status_code}: {response.text[:500]}"
            )


# --- what was seeded ----------------------------------------------------------------------

SMALL_BLOB_LIMIT = 1 << 20


@dataclass
class SeededImage:
    """One pushed manifest and everything it references.

    ``blobs`` are the descriptors of config and layers (config first; empty for an
    index); ``blob_data`` maps digest -> bytes for blobs up to 1 MiB; ``children`` are
    the per-platform manifests of an index or manifest list (``tag`` is ``None`` there).
    """

    repository: str
    tag: str | None
    digest: str
    manifest: bytes
    media_type: str
    blobs: list[dict[str, Any]] = field(default_factory=list)
    blob_data: dict[str, bytes] = field(default_factory=dict)
    children: list["SeededImage"] = field(default_factory=list)
    sif: ExampleSif | None = None

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag else f"{self.repository}@{self.digest}"

    @property
    def config(self) -> dict[str, Any] | None:
        return self.blobs[0] if self.blobs else None

    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.blobs[1:]


@dataclass
class Seeded:
    """Everything :func:`seed_all` pushed, keyed by ``repository:tag``."""

    images: dict[str, SeededImage] = field(default_factory=dict)
    big_blob: oci.DeterministicBlob | None = None

    def __getitem__(self, reference: str) -> SeededImage:
        return self.images[reference]

    def __iter__(self) -> Iterator[SeededImage]:
        return iter(self.images.values())

    def all_manifests(self) -> Iterator[SeededImage]:
        """Every tagged image and every index child."""
        for image in self:
            yield image
            yield from image.children


# --- publishing helpers -------------------------------------------------------------------

BlobContent = bytes | oci.StreamedBlob


def publish(
    client: RegistryClient,
    repository: str,
    tags: list[str] | None,
    media_type: str,
    manifest: bytes,
    blobs: Sequence[tuple[dict[str, Any], BlobContent]],
) -> list[SeededImage]:
    """Push ``blobs`` and then ``manifest`` under each tag (or by digest if ``tags`` is
    None); return one :class:`SeededImage` per tag.

    ``media_type`` is both the PUT Content-Type and what the registry is expected to
    serve back (for a manifest without a ``mediaType`` field, the type it was sent as).
    """
    for desc, content in blobs:
        client.push_blob(repository, content, desc["mediaType"])
    digest = oci.sha256_digest(manifest)
    references = tags or [digest]
    for reference in references:
        client.push_manifest(repository, reference, manifest, media_type)
    small = {
        desc["digest"]: content
        for desc, content in blobs
        if isinstance(content, bytes) and len(content) <= SMALL_BLOB_LIMIT
    }
    record = SeededImage(repository, None, digest, manifest, media_type,
                         [desc for desc, _ in blobs], small)  # fmt: skip
    return [replace(record, tag=tag) for tag in tags] if tags else [record]


def publish_image(
    client: RegistryClient,
    repository: str,
    tags: list[str] | None,
    spec: oci.ImageConfigSpec,
    layers: list[oci.Layer],
    *,
    docker: bool = False,
    annotations: dict[str, str] | None = None,
) -> list[SeededImage]:
    """Build and push a runnable-looking image: OCI by default, Docker schema2 if
    ``docker`` (Docker's descriptor field order and media types)."""
    order: oci.DescriptorOrder = "ggcr" if docker else "image-spec"
    config_type = oci.DOCKER_CONFIG if docker else oci.OCI_CONFIG
    layer_type = oci.DOCKER_LAYER_TAR_GZIP if docker else oci.OCI_LAYER_TAR_GZIP
    config = oci.image_config(spec, [l.diff_id for l in layers], [l.created_by for l in layers])
    config_desc = oci.descriptor_for(config_type, config, order=order)
    layer_descs = [oci.descriptor_for(layer_type, l.data, order=order) for l in layers]
    manifest = oci.image_manifest(
        oci.DOCKER_MANIFEST if docker else oci.OCI_MANIFEST, config_desc, layer_descs, annotations
    )
    blobs = [(config_desc, config)] + [(d, l.data) for d, l in zip(layer_descs, layers)]
    media_type = oci.DOCKER_MANIFEST if docker else oci.OCI_MANIFEST
    return publish(client, repository, tags, media_type, manifest, blobs)


def publish_index(
    client: RegistryClient,
    repository: str,
    tag: str,
    children: dict[str, SeededImage],
    *,
    docker: bool = False,
) -> SeededImage:
    """Push an OCI index (or Docker manifest list) over already-pushed ``children``,
    keyed ``os/arch``."""
    order: oci.DescriptorOrder = "ggcr" if docker else "image-spec"
    media_type = oci.DOCKER_MANIFEST_LIST if docker else oci.OCI_INDEX
    entries = []
    for platform, child in children.items():
        os_name, arch = platform.split("/")
        entries.append(
            oci.descriptor(
                child.media_type,
                child.digest,
                len(child.manifest),
                order=order,
                platform={"architecture": arch, "os": os_name},
            )  # fmt: skip
        )
    manifest = oci.index_manifest(media_type, entries)
    [index] = publish(client, repository, [tag], media_type, manifest, [])
    index.children = list(children.values())
    return index


# --- the standard content -----------------------------------------------------------------

BIG_BLOB_SIZE = 64 * 1024 * 1024 + 1

# Small real .tar.gz layers (a few KiB each); _BASE is shared by several images.
_BASE = oci.make_layer(
    "base-os", {"bin/busybox": 24_000, "etc/os-release": 200}, "ADD rootfs.tar /"
)
_ALPHA = oci.make_layer("alpha", {"opt/alpha/bin/alpha": 16_000}, "COPY alpha /opt/alpha")
_ALPHA_DATA = oci.make_layer(
    "alpha-data", {"opt/alpha/share/data.bin": 9_000}, "COPY data /opt/alpha/share"
)
_BETA = oci.make_layer("beta", {"opt/beta/bin/beta": 20_000}, "COPY beta /opt/beta")


def _arch_layer(arch: str) -> oci.Layer:
    return oci.make_layer(f"app-{arch}", {"usr/bin/app": 12_000}, f"COPY app-{arch} /usr/bin/app")


def seed_oci_images(client: RegistryClient) -> list[SeededImage]:
    """``tools/alpha:1.0`` = ``:latest`` (3 layers) and ``tools/beta:2.0`` (2 layers);
    the base layer is shared."""
    alpha = oci.ImageConfigSpec(
        title="alpha", version="1.0", description="Alpha tools & utilities <test>",
        entrypoint=("/opt/alpha/bin/alpha",), cmd=("--help",), working_dir="/opt/alpha",
        env=("PATH=/opt/alpha/bin:/usr/bin:/bin", "ALPHA_HOME=/opt/alpha"),
    )  # fmt: skip
    beta = oci.ImageConfigSpec(
        title="beta", version="2.0", description="Beta solver", user="1000:1000",
        cmd=("/opt/beta/bin/beta",), working_dir="/work", created="2024-06-15T08:30:00Z",
        extra_labels=(("org.opencontainers.image.url", "https://example.org/beta"),),
    )  # fmt: skip
    return publish_image(
        client, "tools/alpha", ["1.0", "latest"], alpha, [_BASE, _ALPHA, _ALPHA_DATA],
        annotations={"org.opencontainers.image.created": alpha.created},
    ) + publish_image(client, "tools/beta", ["2.0"], beta, [_BASE, _BETA])  # fmt: skip


def _platform_children(
    client: RegistryClient, repository: str, docker: bool
) -> dict[str, SeededImage]:
    """Push linux/amd64 and linux/arm64 images by digest, keyed ``os/arch``."""
    children = {}
    for arch in ("amd64", "arm64"):
        spec = oci.ImageConfigSpec(
            title=repository.rsplit("/", 1)[-1], version="1.0", architecture=arch,
            variant="v8" if arch == "arm64" else None, cmd=("/usr/bin/app",),
        )  # fmt: skip
        layers = [_BASE, _arch_layer(arch)]
        [child] = publish_image(client, repository, None, spec, layers, docker=docker)
        children[f"linux/{arch}"] = child
    return children


def seed_indexes(client: RegistryClient) -> list[SeededImage]:
    """``multi/app:1.0`` (OCI index) and ``legacy/dockerlist:v1`` (Docker list), each
    over linux/amd64 and linux/arm64 children pushed by digest."""
    return [
        publish_index(client, "multi/app", "1.0", _platform_children(client, "multi/app", False)),
        publish_index(
            client, "legacy/dockerlist", "v1",
            _platform_children(client, "legacy/dockerlist", True), docker=True,
        ),
    ]  # fmt: skip


def seed_docker_image(client: RegistryClient) -> list[SeededImage]:
    """``legacy/dockerimg:v2``: a Docker schema2 image."""
    spec = oci.ImageConfigSpec(title="dockerimg", version="2", cmd=("/bin/sh", "-c", "echo hi"))
    return publish_image(client, "legacy/dockerimg", ["v2"], spec, [_BASE, _BETA], docker=True)


@dataclass(frozen=True)
class SifGeneration:
    """How one generation of Apptainer/Singularity pushed a SIF (facts section A1)."""

    repository: str
    tag: str
    manifest_type: str | None  # top-level mediaType field; None = absent (oras-go v1)
    config_type: str
    config: bytes
    order: oci.DescriptorOrder

    @property
    def put_type(self) -> str:
        """The PUT Content-Type: the manifest type, OCI when the field is absent."""
        return self.manifest_type or oci.OCI_MANIFEST


SIF_GENERATIONS = (
    # Apptainer 1.3.1-1.5.x, SingularityCE >= 4.3.3 (ggcr)
    SifGeneration("sif/tool", "1.0", oci.OCI_MANIFEST, oci.SIF_CONFIG, b"{}", "ggcr"),
    # SingularityCE 3.8.4-3.11, Apptainer 1.0-1.2 (oras-go v1)
    SifGeneration("sif/legacy", "oras-go-v1", None, oci.ORAS_UNKNOWN_CONFIG, b"{}", "image-spec"),
    # Apptainer 1.3.0, SingularityCE 4.0-4.3.2 (ggcr, Docker v2 manifest type)
    SifGeneration("sif/dockerv2", "1.3.0", oci.DOCKER_MANIFEST, oci.SIF_CONFIG, b"{}", "ggcr"),
    # Singularity 3.7 (oras + containerd, 0-byte config)
    SifGeneration("sif/zeroconfig", "3.7", oci.OCI_MANIFEST, oci.SIF_CONFIG, b"", "image-spec"),
)


def publish_sif(client: RegistryClient, generation: SifGeneration, squashfs: bytes) -> SeededImage:
    """Push one SIF as that generation would: one config blob, one SIF layer titled
    ``<name>_<tag>.sif``."""
    name = generation.repository.rsplit("/", 1)[-1]
    sif = example_sif(squashfs, name=name, version=generation.tag)
    title = f"{name}_{generation.tag}.sif"
    order = generation.order
    config_desc = oci.descriptor_for(generation.config_type, generation.config, order=order)
    layer_desc = oci.descriptor_for(
        oci.SIF_LAYER, sif.data, order=order, annotations={oci.TITLE_ANNOTATION: title}
    )
    manifest = oci.image_manifest(generation.manifest_type, config_desc, [layer_desc])
    [image] = publish(
        client, generation.repository, [generation.tag], generation.put_type, manifest,
        [(config_desc, generation.config), (layer_desc, sif.data)],
    )  # fmt: skip
    image.sif = sif
    return image


def seed_sifs(client: RegistryClient) -> list[SeededImage]:
    """One SIF artifact per generation in :data:`SIF_GENERATIONS`."""
    with tempfile.TemporaryDirectory(prefix="hpc-mirror-sif-") as tmpdir:
        squashfs = make_squashfs(tmpdir)
    return [publish_sif(client, generation, squashfs) for generation in SIF_GENERATIONS]


def seed_big_blob(client: RegistryClient) -> tuple[SeededImage, oci.DeterministicBlob]:
    """``big/blob:1.0``: one uncompressed layer of exactly 64 MiB + 1 byte, streamed."""
    blob = oci.DeterministicBlob("big/blob", BIG_BLOB_SIZE)
    spec = oci.ImageConfigSpec(title="blob", version="1.0", description="one large layer")
    config = oci.image_config(spec, [blob.digest], ["COPY blob.bin /"])
    config_desc = oci.descriptor_for(oci.OCI_CONFIG, config)
    layer_desc = oci.descriptor(oci.OCI_LAYER_TAR, blob.digest, blob.size)
    manifest = oci.image_manifest(oci.OCI_MANIFEST, config_desc, [layer_desc])
    [image] = publish(client, "big/blob", ["1.0"], oci.OCI_MANIFEST, manifest,
                      [(config_desc, config), (layer_desc, blob)])  # fmt: skip
    return image, blob


def seed_all(client: RegistryClient) -> Seeded:
    """Push the whole standard test set; see the module docstring."""
    seeded = Seeded()
    images = seed_oci_images(client) + seed_indexes(client) + seed_docker_image(client)
    images += seed_sifs(client)
    big, seeded.big_blob = seed_big_blob(client)
    for image in images + [big]:
        seeded.images[image.reference] = image
    return seeded
