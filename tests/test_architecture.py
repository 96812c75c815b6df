"""The import direction of the package is part of its design (see STYLE.md): data flows
routes -> service -> (upstream, store, index); the catalog reads only store and index;
lower layers never import upper ones."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "mirror"

# module -> package modules it may import. Anything not listed here may not be imported.
ALLOWED = {
    "errors": set(),
    "reference": {"errors"},
    "policy": set(),
    "config": {"errors"},
    "manifests": {"errors", "reference"},
    "store": {"errors", "reference"},
    "index": {"manifests", "reference", "store"},
    "upstream": {"config", "errors", "policy"},
    "fill": {"errors", "reference", "store"},
    "siftree": {"reference", "store"},
    "routing": {"config", "errors", "reference"},
    "memo": {"reference"},
    "service": {"config", "errors", "fill", "index", "manifests", "memo", "policy",
                "reference", "routing", "siftree", "store", "upstream"},
    "routes": {"errors", "fill", "policy", "reference", "service"},
    "app": {"config", "routes", "service"},
    "prefetch": {"errors", "manifests", "reference", "service"},
    # The catalog reads the store and index only: never the upstream client or service.
    "sif": set(),
    "charts": set(),
    "sitewriter": set(),
    "facts": {"manifests", "reference", "sif", "store"},
    "catalog": {"charts", "config", "facts", "index", "reference", "sitewriter", "store",
                "units"},
    "units": set(),
    "prefetch_cli": {"config", "prefetch", "service", "units"},
    "verify": {"reference", "store"},
    "gc": {"index", "manifests", "reference", "store", "verify"},
    "bundle": {"errors", "index", "manifests", "reference", "store"},
    "cli": {"app", "bundle", "catalog", "config", "errors", "gc", "index", "prefetch",
            "prefetch_cli",
            "routing", "store", "units", "verify"},
}


def _package_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mirror"):
            parts = node.module.split(".")
            found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("mirror."))
    found.discard("__init__")
    return found


def test_every_module_is_in_the_allowed_map():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(ALLOWED), "add new modules to ALLOWED with their allowed imports"


def test_imports_follow_the_data_flow():
    violations = []
    for module, allowed in ALLOWED.items():
        imported = _package_imports(PACKAGE / f"{module}.py") - {"__version__"}
        for name in sorted(imported - allowed):
            violations.append(f"mirror.{module} imports mirror.{name}")
    assert not violations, "\n".join(violations)


def test_the_checker_sees_relative_imports():
    # guard against a checker that silently finds nothing
    assert "service" in _package_imports(PACKAGE / "routes.py")
