"""A store with local images of two namespaces (a signed SIF with a cosign referrer, a
multi-arch OCI image) and one cached upstream image, and the config to render it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirror import config as config_module
from mirror.cache.store import ContentStore
from mirror.reference import Repository

from .accounts import write_htpasswd
from .local_images import LocalImage, push_image, push_index, push_sif
from .proxy import UPSTREAM_PREFIX, proxy_config, toml_text
from .sifwriter import ExampleSif, example_sif, make_squashfs

PUSHED_AT = 1_750_000_000.0  # 2025-06-15T15:06:40Z
COSIGN = "application/vnd.dev.cosign.artifact.sig.v1+json"
TOOL = Repository("local", "alice/tool")
APP = Repository("local", "physics/app")
CACHED = Repository(UPSTREAM_PREFIX, "library/base")


@dataclass(frozen=True)
class LocalCatalog:
    workdir: Path
    sif: ExampleSif
    tool: LocalImage  # local/alice/tool:1.0, a signed SIF
    signature: LocalImage  # a cosign signature of it, pushed by carol
    app: LocalImage  # local/physics/app:2, an OCI index over two images

    def config(self, **local: Any) -> config_module.Config:
        """The site's config, `[local]` keys (access, ...) and `catalog` ones overridden."""
        catalog = {"mirror_url": "mirror.site:5000", **local.pop("catalog", {})}
        upstream = {"url": "http://127.0.0.1:9", "prefix": UPSTREAM_PREFIX, "default": True}
        tables = proxy_config(self.workdir, {"u": upstream})
        tables["auth"] = {"htpasswd": str(self.workdir / "htpasswd")}
        tables["local"] = {"prefix": "local", **local}
        tables["catalog"] = catalog
        path = self.workdir / "mirror.toml"
        path.write_text(toml_text(tables))
        return config_module.load(path)


def fill_local_store(workdir: Path) -> LocalCatalog:
    write_htpasswd(workdir / "htpasswd", {"alice": "pw", "bob": "pw", "carol": "pw"})
    store = ContentStore(workdir / "cache")
    sif = example_sif(make_squashfs(workdir / "squashfs"), name="tool")
    tool = push_sif(store, TOOL, "1.0", sif.data, "alice", PUSHED_AT)
    signature = push_image(
        store,
        TOOL,
        None,
        [b'{"critical": {}}'],
        "carol",
        PUSHED_AT + 60,
        subject=tool,
        artifact_type=COSIGN,
    )
    amd = push_image(store, APP, None, [b"app for amd64"], "bob", PUSHED_AT)
    arm = push_image(store, APP, None, [b"app for arm64"], "bob", PUSHED_AT)
    app = push_index(
        store, APP, "2", [(amd, "linux/amd64"), (arm, "linux/arm64")], "bob", PUSHED_AT
    )
    cached = push_image(store, CACHED, "1", [b"cached"], None, PUSHED_AT)
    store.remove_push_record(CACHED, cached.digest)  # pulled, not pushed
    return LocalCatalog(workdir, sif, tool, signature, app)


@pytest.fixture(scope="module")
def local_catalog(tmp_path_factory) -> LocalCatalog:
    return fill_local_store(tmp_path_factory.mktemp("local-catalog"))
