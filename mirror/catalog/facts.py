"""What the catalog shows about one cached manifest, extracted from the store.

`manifest_facts` turns a manifest digest into `ManifestFacts`: kind, sizes, platforms, the
image config's human-facing fields, or a SIF's metadata read from its header and
descriptors. Content by digest is immutable, so facts change only while some referenced
blob is still missing from the store (`complete`). Damaged content never raises: it is
described in `problems` and rendered as such.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from mirror.cache.store import ContentStore
from mirror.catalog.model import (
    Child,
    DescriptorView,
    HistoryStep,
    ImageConfig,
    ManifestFacts,
    iso_text,
)
from mirror.manifests import Descriptor, Kind, ParsedManifest, parse, platform_text
from mirror.reference import Digest
from mirror.sif.model import SifError
from mirror.sif.reader import read_sif

OCI_KEY_PREFIX = "org.opencontainers.image."
MAX_CONFIG_BYTES = 8 * 1024 * 1024


def manifest_facts(store: ContentStore, digest: Digest, media_type: str) -> ManifestFacts:
    body = store.read_blob(digest)
    if body is None:
        return ManifestFacts(
            str(digest),
            media_type,
            Kind.UNKNOWN,
            complete=False,
            problems=("the manifest is not in the store",),
        )
    parsed = parse(body, media_type)
    facts = ManifestFacts(
        str(digest),
        media_type,
        parsed.kind,
        manifest_size=len(body),
        annotations=_strings(parsed.annotations),
    )
    if parsed.kind is Kind.UNKNOWN:
        facts = _problem(facts, "the manifest is not a JSON manifest or index")
    elif parsed.kind is Kind.INDEX:
        facts = _index_facts(facts, parsed)
    else:
        facts = _manifest_facts(store, facts, parsed)
    return replace(
        facts, created=facts.created or facts.annotations.get(OCI_KEY_PREFIX + "created")
    )


def _index_facts(facts: ManifestFacts, parsed: ParsedManifest) -> ManifestFacts:
    children = tuple(
        Child(
            str(child.digest),
            child.media_type,
            child.size,
            _title(child),
            platform_text(child.platform),
        )
        for child in parsed.manifests
    )
    platforms = tuple(dict.fromkeys(child.platform for child in children if child.platform))
    return replace(facts, children=children, platforms=platforms)


def _manifest_facts(
    store: ContentStore, facts: ManifestFacts, parsed: ParsedManifest
) -> ManifestFacts:
    sizes = [d.size for d in ((parsed.config,) if parsed.config else ()) + parsed.layers]
    facts = replace(
        facts,
        config=_descriptor(parsed.config) if parsed.config else None,
        layers=tuple(_descriptor(layer) for layer in parsed.layers),
        total_size=sum(sizes) if all(s >= 0 for s in sizes) else None,
        layers_size=sum(max(layer.size, 0) for layer in parsed.layers),
    )
    if parsed.kind is Kind.SIF:
        return _sif_facts(store, facts, parsed.layers[0])
    if parsed.kind is Kind.IMAGE and parsed.config is not None:
        return _image_config_facts(store, facts, parsed.config.digest)
    return facts


def _image_config_facts(store: ContentStore, facts: ManifestFacts, digest: Digest) -> ManifestFacts:
    size = store.blob_size(digest)
    if size is None:
        return _problem(facts, "the image config is not cached yet", complete=False)
    if size > MAX_CONFIG_BYTES:
        return _problem(facts, f"the image config is too large to show ({size} bytes)")
    try:
        config = json.loads(store.read_blob(digest) or b"")
        if not isinstance(config, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError):
        return _problem(facts, "the image config is not valid JSON")
    inner = config.get("config")
    inner = inner if isinstance(inner, dict) else {}
    platform = platform_text(config)
    image = ImageConfig(
        created=_text(config.get("created")),
        author=_text(config.get("author")),
        architecture=_text(config.get("architecture")),
        os=_text(config.get("os")),
        variant=_text(config.get("variant")),
        labels=_strings(inner.get("Labels")),
        env=_string_list(inner.get("Env")),
        entrypoint=_string_list(inner.get("Entrypoint")),
        cmd=_string_list(inner.get("Cmd")),
        working_dir=_text(inner.get("WorkingDir")),
        user=_text(inner.get("User")),
        exposed_ports=tuple(sorted(_strings(inner.get("ExposedPorts"), keys_only=True))),
        history=tuple(_history_step(h) for h in config.get("history") or [] if isinstance(h, dict)),
    )
    return replace(
        facts, image=image, created=image.created, platforms=(platform,) if platform else ()
    )


def _history_step(entry: dict) -> HistoryStep:
    return HistoryStep(
        _text(entry.get("created")),
        _text(entry.get("created_by")),
        _text(entry.get("comment")),
        bool(entry.get("empty_layer")),
    )


def _sif_facts(store: ContentStore, facts: ManifestFacts, layer: Descriptor) -> ManifestFacts:
    path = store.blob_path(layer.digest)
    if store.blob_size(layer.digest) is None:
        return _problem(facts, "the SIF file is not cached yet", complete=False)
    try:
        info = read_sif(path)
    except SifError as exc:
        return _problem(facts, f"the layer is not a readable SIF file: {exc}")
    except OSError as exc:  # evicted or unreadable between listing and reading
        return _problem(facts, f"the SIF file could not be read: {exc.strerror}", complete=False)
    known_arch = info.arch and info.arch != "unknown"
    return replace(
        facts,
        sif=info,
        problems=facts.problems + info.problems,
        created=iso_text(info.created_best),
        platforms=(f"linux/{info.arch}",) if known_arch else facts.platforms,
    )


def _problem(facts: ManifestFacts, problem: str, complete: bool = True) -> ManifestFacts:
    """`facts` with one more problem; `complete=False` when a later render may read more."""
    return replace(
        facts, problems=facts.problems + (problem,), complete=facts.complete and complete
    )


def _descriptor(descriptor: Descriptor) -> DescriptorView:
    return DescriptorView(
        str(descriptor.digest), descriptor.media_type, descriptor.size, _title(descriptor)
    )


def _title(descriptor: Descriptor) -> str | None:
    return _text((descriptor.annotations or {}).get(OCI_KEY_PREFIX + "title"))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: Any, keys_only: bool = False) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {
        str(k): ("" if keys_only else str(v))
        for k, v in sorted(value.items())
        if isinstance(v, (str, int, float, bool)) or keys_only
    }


def _string_list(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()
