"""What the catalog shows about one cached manifest, extracted from the store.

`manifest_facts` turns a manifest digest into a plain JSON-able dict: kind, sizes,
platforms, the image config's human-facing fields, or a SIF's metadata read from its header
and descriptors. Content by digest is immutable, so facts are cached by digest; they are
recomputed only while some referenced blob is still missing from the store (`complete`).
Damaged content never raises: it is described in `problems` and rendered as such.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from mirror.cache.store import ContentStore
from mirror.manifests import Descriptor, Kind, ParsedManifest, parse, platform_text
from mirror.reference import Digest
from mirror.sif.reader import SifError, read_sif

OCI_KEY_PREFIX = "org.opencontainers.image."
MAX_CONFIG_BYTES = 8 * 1024 * 1024


def manifest_facts(store: ContentStore, digest: Digest, media_type: str) -> dict[str, Any]:
    body = store.read_blob(digest)
    facts: dict[str, Any] = {"digest": str(digest), "media_type": media_type,
                             "kind": Kind.UNKNOWN.value, "problems": [], "complete": True,
                             "annotations": {}, "platforms": [], "created": None,
                             "total_size": None}
    if body is None:
        facts["problems"].append("the manifest is not in the store")
        facts["complete"] = False
        return facts
    facts["manifest_size"] = len(body)
    parsed = parse(body, media_type)
    facts["kind"] = parsed.kind.value
    facts["annotations"] = _strings(parsed.annotations)
    if parsed.kind is Kind.UNKNOWN:
        facts["problems"].append("the manifest is not a JSON manifest or index")
    elif parsed.kind is Kind.INDEX:
        _index_facts(facts, parsed)
    else:
        _manifest_facts(store, facts, parsed)
    facts["created"] = facts["created"] or facts["annotations"].get(OCI_KEY_PREFIX + "created")
    return facts


def _index_facts(facts: dict[str, Any], parsed: ParsedManifest) -> None:
    children = []
    for child in parsed.manifests:
        platform = platform_text(child.platform)
        children.append({**_descriptor(child), "platform": platform})
        if platform and platform not in facts["platforms"]:
            facts["platforms"].append(platform)
    facts["children"] = children


def _manifest_facts(store: ContentStore, facts: dict[str, Any], parsed: ParsedManifest) -> None:
    facts["config"] = _descriptor(parsed.config) if parsed.config else None
    facts["layers"] = [_descriptor(layer) for layer in parsed.layers]
    sizes = [d.size for d in ((parsed.config,) if parsed.config else ()) + parsed.layers]
    facts["total_size"] = sum(sizes) if all(s >= 0 for s in sizes) else None
    facts["layers_size"] = sum(max(layer.size, 0) for layer in parsed.layers)
    if parsed.kind is Kind.SIF:
        _sif_facts(store, facts, parsed.layers[0])
    elif parsed.kind is Kind.IMAGE and parsed.config is not None:
        _image_config_facts(store, facts, parsed.config.digest)


def _image_config_facts(store: ContentStore, facts: dict[str, Any], digest: Digest) -> None:
    size = store.blob_size(digest)
    if size is None:
        facts["problems"].append("the image config is not cached yet")
        facts["complete"] = False
        return
    if size > MAX_CONFIG_BYTES:
        facts["problems"].append(f"the image config is too large to show ({size} bytes)")
        return
    try:
        config = json.loads(store.read_blob(digest) or b"")
        if not isinstance(config, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError):
        facts["problems"].append("the image config is not valid JSON")
        return
    inner = config.get("config") if isinstance(config.get("config"), dict) else {}
    platform = platform_text(config)
    facts["platforms"] = [platform] if platform else []
    facts["created"] = _text(config.get("created"))
    facts["image"] = {
        "created": _text(config.get("created")),
        "author": _text(config.get("author")),
        "architecture": _text(config.get("architecture")),
        "os": _text(config.get("os")),
        "variant": _text(config.get("variant")),
        "labels": _strings(inner.get("Labels")),
        "env": _string_list(inner.get("Env")),
        "entrypoint": _string_list(inner.get("Entrypoint")),
        "cmd": _string_list(inner.get("Cmd")),
        "working_dir": _text(inner.get("WorkingDir")),
        "user": _text(inner.get("User")),
        "exposed_ports": sorted(_strings(inner.get("ExposedPorts"), keys_only=True)),
        "history": [_history_entry(h) for h in config.get("history") or []
                    if isinstance(h, dict)],
    }


def _history_entry(entry: dict) -> dict[str, Any]:
    return {"created": _text(entry.get("created")), "created_by": _text(entry.get("created_by")),
            "comment": _text(entry.get("comment")), "empty_layer": bool(entry.get("empty_layer"))}


def _sif_facts(store: ContentStore, facts: dict[str, Any], layer: Descriptor) -> None:
    path = store.blob_path(layer.digest)
    if store.blob_size(layer.digest) is None:
        facts["problems"].append("the SIF file is not cached yet")
        facts["complete"] = False
        return
    try:
        info = read_sif(path)
    except SifError as exc:
        facts["problems"].append(f"the layer is not a readable SIF file: {exc}")
        return
    except OSError as exc:  # evicted or unreadable between listing and reading
        facts["problems"].append(f"the SIF file could not be read: {exc.strerror}")
        facts["complete"] = False
        return
    sif = _jsonable(asdict(info))
    sif["signed"] = info.signed
    sif["created_best"] = _jsonable(info.created_best)
    facts["sif"] = sif
    facts["problems"].extend(info.problems)
    facts["created"] = sif["created_best"]
    if info.arch and info.arch != "unknown":
        facts["platforms"] = [f"linux/{info.arch}"]


def _descriptor(descriptor: Descriptor) -> dict[str, Any]:
    title = (descriptor.annotations or {}).get(OCI_KEY_PREFIX + "title")
    return {"digest": str(descriptor.digest), "media_type": descriptor.media_type,
            "size": descriptor.size, "title": _text(title)}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: Any, keys_only: bool = False) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): ("" if keys_only else str(v)) for k, v in sorted(value.items())
            if isinstance(v, (str, int, float, bool)) or keys_only}


def _string_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _jsonable(value: Any) -> Any:
    """SIF dataclasses as JSON: datetimes become ISO 8601 text, tuples become lists."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
