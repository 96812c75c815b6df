"""The catalog's model: what the pages and the JSON files show, as typed frozen records.

`facts.py` reads one manifest into `ManifestFacts`; `gather.py` builds a `RepoView` per
repository and its `RepoRow`; `pages.py` renders them. Every record is plain data, so the
render's helper processes can send it back pickled. `to_json()` is the one way a record
becomes JSON (catalog.json, repo.json, the render state): it returns the JSON object, whose
nested records `json_default` turns into objects of their fields when it is dumped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from mirror.manifests import Kind
from mirror.reference import Repository
from mirror.sif.model import SifInfo

# How the site names each kind of manifest: in the index's "Kind" column, on the tag
# tables, as the lead of a manifest's page and in catalog.json's `kinds`.
KIND_LABELS: dict[Kind, str] = {
    Kind.IMAGE: "OCI image",
    Kind.INDEX: "multi-arch index",
    Kind.SIF: "SIF",
    Kind.ARTIFACT: "other artifact",
    Kind.UNKNOWN: "unreadable",
}


@dataclass(frozen=True)
class DescriptorView:
    """A config or layer as a manifest lists it."""

    digest: str
    media_type: str
    size: int  # as the manifest states it; negative when the manifest is wrong
    title: str | None  # the `org.opencontainers.image.title` annotation (a file name)


@dataclass(frozen=True)
class Child(DescriptorView):
    """A manifest an index lists."""

    platform: str  # `os/architecture[/variant]`, "" when the index gives none


@dataclass(frozen=True)
class HistoryStep:
    """One step of an image's build history."""

    created: str | None
    created_by: str | None  # the command, e.g. a Dockerfile line
    comment: str | None
    empty_layer: bool  # the step changed metadata only


@dataclass(frozen=True)
class ImageConfig:
    """The human-facing fields of an OCI image config; text the config lacks is None."""

    created: str | None
    author: str | None
    architecture: str | None
    os: str | None
    variant: str | None
    labels: dict[str, str]
    env: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    working_dir: str | None
    user: str | None
    exposed_ports: tuple[str, ...]
    history: tuple[HistoryStep, ...]


@dataclass(frozen=True)
class ManifestFacts:
    """What the catalog shows about one cached manifest. Fields that do not apply to its
    kind stay None (and are left out of its JSON)."""

    digest: str
    media_type: str
    kind: Kind
    problems: tuple[str, ...] = ()  # what could not be read; shown, never raised
    complete: bool = True  # False while a blob the facts need is not cached yet
    annotations: dict[str, str] = field(default_factory=dict)
    platforms: tuple[str, ...] = ()
    created: str | None = None  # ISO 8601, from the config, the SIF or an annotation
    total_size: int | None = None  # config and layers; None for an index or when unknown
    manifest_size: int | None = None  # None: the manifest itself is not in the store
    children: tuple[Child, ...] | None = None  # an index's manifests
    config: DescriptorView | None = None  # of a manifest (one with `layers`)
    layers: tuple[DescriptorView, ...] | None = None  # None: not a manifest with layers
    layers_size: int | None = None
    image: ImageConfig | None = None  # an OCI image whose config could be read
    sif: SifInfo | None = None  # a SIF whose file could be read

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "digest": self.digest,
            "media_type": self.media_type,
            "kind": self.kind.value,
            "problems": self.problems,
            "complete": self.complete,
            "annotations": self.annotations,
            "platforms": self.platforms,
            "created": self.created,
            "total_size": self.total_size,
        }
        if self.manifest_size is not None:
            data["manifest_size"] = self.manifest_size
        if self.children is not None:
            data["children"] = self.children
        if self.layers is not None:
            data["config"] = self.config
            data["layers"] = self.layers
            data["layers_size"] = self.layers_size
        if self.image is not None:
            data["image"] = self.image
        if self.sif is not None:
            data["sif"] = {
                **json_default(self.sif),
                "signed": self.sif.signed,
                "created_best": iso_text(self.sif.created_best),
            }
        return data


@dataclass(frozen=True)
class ManifestSummary:
    """A tagged manifest in one line of a table; an index takes its size and creation
    date from its children."""

    kind: Kind
    platforms: tuple[str, ...]
    size: int | None
    created: str | None
    signed: bool
    encrypted: bool
    title: str
    description: str
    damaged: bool  # some content could not be read


@dataclass(frozen=True)
class TagView:
    """A tag on its repository's page."""

    name: str
    digest: str
    media_type: str
    confirmed_at: str | None  # when the upstream last confirmed the tag
    pulls: int  # through this mirror, over every node
    last_pulled: str | None
    summary: ManifestSummary

    @property
    def page(self) -> str:
        """Its manifest's page, relative to the repository's directory."""
        return manifest_page(self.digest)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "media_type": self.media_type,
            "confirmed_at": self.confirmed_at,
            "pulls": self.pulls,
            "last_pulled": self.last_pulled,
            "page": self.page,
        }


@dataclass(frozen=True)
class SifLink:
    """A repository of the SIF namespace converted from the one shown, or the image
    repository the one shown was converted from."""

    path: str  # its canonical name
    page: str  # its page, relative to the site root; "" when it has none (not listed)
    platform: str  # what the SIF was converted for
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pushed:
    """Who pushed a manifest to the local namespace (None: unknown), and when."""

    user: str | None
    at: str | None  # ISO 8601


@dataclass(frozen=True)
class Referrer:
    """An artifact pushed with a `subject` (a signature, an SBOM), as the referrers API
    lists it, and who pushed it when that is known."""

    artifact_type: str
    digest: str
    size: int | None
    pushed: Pushed | None


@dataclass(frozen=True)
class RepoView:
    """Everything the pages of one repository show."""

    repository: Repository
    tags: tuple[TagView, ...]
    manifests: dict[str, ManifestFacts]  # by digest: every tagged manifest, and the
    # children of every tagged index
    converted_from: SifLink | None = None  # a converted image's source
    converted_to: tuple[SifLink, ...] = ()  # an image's converted SIFs
    sif_files: dict[str, str] = field(default_factory=dict)  # tag -> its SIF-tree file
    namespace: str = ""  # `<prefix>/<user or group>` of a local repository, else ""
    pushed: dict[str, Pushed] = field(default_factory=dict)  # by manifest digest (local)
    referrers: dict[str, tuple[Referrer, ...]] = field(default_factory=dict)  # by subject

    @property
    def prefix(self) -> str:
        return self.repository.prefix

    @property
    def name(self) -> str:
        return self.repository.name

    @property
    def path(self) -> str:
        return str(self.repository)

    @property
    def directory(self) -> str:
        return pages_dir(self.repository)

    def to_json(self) -> dict[str, Any]:
        """repo.json."""
        data: dict[str, Any] = {
            "repository": self.path,
            "tags": [tag.to_json() for tag in self.tags],
            "manifests": {
                digest: facts.to_json() for digest, facts in sorted(self.manifests.items())
            },
        }
        if self.converted_from is not None:
            data["converted_from"] = self.converted_from
        if self.converted_to:
            data["converted_to"] = self.converted_to
        if self.sif_files:
            data["sif_files"] = self.sif_files
        if self.namespace:
            data["namespace"] = self.namespace
            data["pushed"] = self.pushed
            data["referrers"] = self.referrers
        return data


@dataclass(frozen=True)
class RepoRow:
    """One repository as the index and the statistics list it; its size, date, title and
    description are those of its newest tag."""

    prefix: str
    name: str
    path: str
    page: str  # its page, relative to the site root
    tag_names: tuple[str, ...]
    kinds: tuple[str, ...]  # labels from KIND_LABELS
    platforms: tuple[str, ...]
    size: int | None
    created: str | None
    last_pulled: str | None
    pulls: int
    signed: bool
    encrypted: bool
    title: str
    description: str
    damaged: bool
    namespace: str = ""  # `<prefix>/<user or group>` of a local repository, else ""
    pushed_by: str | None = None  # of its newest tag, when it is local
    pushed_at: str | None = None
    sif_signatures: int = 0  # signature objects in its newest tag's SIF
    referrers: int = 0  # artifacts (signatures, SBOMs) pushed for its newest tag

    def to_json(self) -> dict[str, Any]:
        """One entry of catalog.json's `repositories`."""
        data = json_default(self)
        data["tags"] = data.pop("tag_names")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RepoRow:
        """The row `to_json` wrote (the previous render's state)."""
        data = dict(data)
        tag_names = data.pop("tags")
        return cls(
            **{
                **data,
                "tag_names": tuple(tag_names),
                "kinds": tuple(data["kinds"]),
                "platforms": tuple(data["platforms"]),
            }
        )


@dataclass(frozen=True)
class SiteInfo:
    """What every page says about the site."""

    title: str
    mirror: str  # host[:port] to pull through
    version: str  # of hpc-mirror, in the footer
    https: bool = False  # users reach the mirror over HTTPS: commands carry no insecure flag


def catalog_json(site: SiteInfo, rows: list[RepoRow]) -> dict[str, Any]:
    """catalog.json: every repository, for scripts."""
    return {
        "title": site.title,
        "mirror": site.mirror,
        "https": site.https,
        "repositories": [row.to_json() for row in rows],
    }


def pages_dir(repo: Repository) -> str:
    """Directory of a repository's pages. A prefix may hold ':' (host:port), which a
    relative link would read as a URL scheme; '_' never occurs in a prefix."""
    return f"r/{repo.prefix.replace(':', '_')}/{repo.name}"


def manifest_page(digest: str) -> str:
    """A manifest's page, relative to its repository's directory."""
    return f"sha256-{digest.split(':')[1]}.html"


def iso_text(when: dt.datetime | None) -> str | None:
    """A UTC time as ISO 8601 text with a `Z`, as the JSON and the pages show it."""
    return when.isoformat().replace("+00:00", "Z") if when else None


def json_default(value: Any) -> Any:
    """For `json.dumps(default=...)`: a record as the object of its fields, a time as
    ISO 8601 text, anything else as its text. The encoder recurses into what it returns."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, dt.datetime):
        return iso_text(value)
    return str(value)
