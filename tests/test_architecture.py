"""The import direction of the package is part of its design (README, "Layout").

Data flows one way: HTTP (proxy.handlers) -> the proxy's decisions (proxy.service, blob
fills) -> (upstream client, content store, metadata cache, pull statistics). The catalog
reads only the cache and never the proxy; the CLI sits on top of everything. This test
states the rooms (root modules and subpackages), which rooms each may import, and inside
the larger rooms the layers their modules stack in.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "mirror"

# room -> rooms it may import. A room is a root module (mirror/config.py) or a subpackage
# (mirror/proxy/). Anything not listed may not be imported.
ROOMS: dict[str, set[str]] = {
    "errors": set(),
    "units": {"errors"},
    "reference": {"errors"},
    "sif_names": {"reference"},
    "config": {"errors", "reference", "sif_names", "units"},
    "config_toml": {"config"},
    "manifests": {"errors", "reference"},
    "sif": set(),
    "access": {"config", "errors", "reference"},
    # Every series, defined once; nothing of HTTP or the store.
    "metrics": set(),
    "cache": {"config", "errors", "manifests", "metrics", "reference", "units"},
    # The site's own registry (pushes): the proxy calls it.
    "local": {"access", "cache", "config", "errors", "manifests", "metrics", "reference", "units"},
    # The proxy serves converted images: it calls the converter (never the other way).
    "proxy": {
        "access",
        "cache",
        "config",
        "convert",
        "errors",
        "local",
        "manifests",
        "metrics",
        "reference",
        "sif_names",
        "units",
    },
    "prefetch": {"config", "errors", "manifests", "proxy", "reference", "units"},
    # The catalog reads what is cached: never the proxy or an upstream.
    "catalog": {
        "access",
        "cache",
        "config",
        "errors",
        "manifests",
        "reference",
        "sif",
        "sif_names",
        "units",
    },
    # OCI image -> SIF: reads the store, never the proxy; the proxy calls it.
    "convert": {"cache", "config", "errors", "manifests", "reference", "sif", "units"},
    "cli": {
        "access",
        "cache",
        "catalog",
        "config",
        "config_toml",
        "errors",
        "local",
        "prefetch",
        "proxy",
        "reference",
        "units",
    },
}

# Inside a room, a module may import only modules of earlier layers.
LAYERS: dict[str, list[set[str]]] = {
    "proxy": [
        {
            "policy",
            "memo",
            "routing",
            "ranges",
            "throttled_log",
            "body_receiver",
            "listener_tls",
            "served",
            "sif_artifact",
        },
        {"upstream", "fill", "access_gate", "access_log", "health"},
        {"passthrough", "token_endpoint"},
        {"sources"},
        {"blob_fills"},
        {"service"},
        {"image_walk", "writes"},
        {"manifest_writes"},
        {"conversions"},
        {"converted"},
        {"upload_handlers"},
        {"handlers"},
        {"metrics_http", "lifecycle"},
        {"app"},
    ],
    "cache": [
        {"dirs"},
        {"blob_writer", "refusals"},
        {"store"},
        {"metadata", "pulls", "verify", "siftree", "usage"},
        {"open_cache", "gc", "bundle"},
    ],
    "catalog": [
        {"charts", "site_writer", "model"},
        {"facts"},
        {"gather", "pages"},
        {"render"},
    ],
    "local": [
        {"quota", "pushed_manifest"},
        {"uploads", "images"},
    ],
    "prefetch": [
        {"images"},
        {"terminal"},
    ],
    "access": [
        {"identity", "watched_file", "login_throttle"},
        {"policy", "htpasswd", "groups_file", "tokens", "ldap_directory"},
        {"authenticator"},
    ],
    "metrics": [
        {"series"},
        {"exposition"},
    ],
    "sif": [
        {"format", "dates"},
        {"model", "writer"},
        {"reader"},
    ],
    "convert": [
        {"layers", "scripts", "sif_file", "tar"},
        {"tree", "image"},
        {"metadata"},
        {"runtime"},
        {"stream"},
        {"worker"},
        {"converter"},
    ],
}


def _room_of(module: str) -> str:
    """`mirror.proxy.service` -> `proxy`; `mirror.config` -> `config`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    """Absolute dotted names of the package modules `path` imports."""
    here = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module or ""
            if module == "mirror" or module.startswith("mirror."):
                if module.count(".") == 0 or _is_package(module):
                    # `from mirror.proxy import service`: each name may be a module
                    found.update(f"{module}.{alias.name}" for alias in node.names)
                else:
                    found.add(module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mirror."))
    return {name for name in found if _exists(name)}


def _is_package(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists()


def _exists(module: str) -> bool:
    path = PACKAGE.parent / module.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py"
    }


def test_every_room_and_module_is_stated():
    rooms = {_room_of(name) for name in _modules()}
    assert rooms == set(ROOMS), "add new rooms to ROOMS with the rooms they may import"
    for room, layers in LAYERS.items():
        listed = set().union(*layers)
        present = {p.stem for p in (PACKAGE / room).glob("*.py")} - {"__init__"}
        assert listed == present, f"state every module of mirror/{room}/ in LAYERS"


def test_rooms_import_only_the_rooms_they_may():
    violations = []
    for module, path in sorted(_modules().items()):
        room = _room_of(module)
        for imported in sorted(_imports(path)):
            target = _room_of(imported)
            if target not in (room, "__init__") and target not in ROOMS[room]:
                violations.append(f"{module} imports {imported}")
    assert not violations, "\n".join(violations)


def test_modules_import_only_earlier_layers_of_their_room():
    violations = []
    for room, layers in LAYERS.items():
        layer_of = {name: i for i, layer in enumerate(layers) for name in layer}
        for name, layer in layer_of.items():
            for imported in _imports(PACKAGE / room / f"{name}.py"):
                parts = imported.split(".")
                if (
                    _room_of(imported) == room
                    and len(parts) > 2
                    and layer_of[parts[2]] >= layer
                    and parts[2] != name
                ):
                    violations.append(f"mirror.{room}.{name} imports {imported}")
    assert not violations, "\n".join(violations)


def test_the_checker_sees_every_kind_of_import():
    # guard against a checker that silently finds nothing
    assert "mirror.proxy.service" in _imports(PACKAGE / "proxy" / "handlers.py")
    assert "mirror.errors" in _imports(PACKAGE / "cache" / "blob_writer.py")
