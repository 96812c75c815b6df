"""`mirror gc`: least recently used images go first; pinned images and blobs shared with
kept images stay."""

from __future__ import annotations

import time

from tests.conftest import UPSTREAM_PREFIX, upstream_entry
from tests.support.proxy import proxy_config, run_mirror, toml_text
from tests.support.seed import RegistryClient, seed_all

ORDER = ["big/blob:1.0", "tools/alpha:1.0", "tools/beta:2.0", "sif/tool:1.0"]  # oldest first


def _stored(cache) -> set[str]:
    return {p.name for p in (cache / "blobs" / "sha256").glob("*/*")}


def test_gc_evicts_least_recently_used_and_keeps_pinned_and_shared(private_upstream, tmp_path):
    client = RegistryClient(private_upstream.url)
    seeded = seed_all(client)
    client.close()
    config = proxy_config(
        tmp_path, {"u": upstream_entry(private_upstream.url)}, pins=[f"{UPSTREAM_PREFIX}/big/blob"]
    )
    path = tmp_path / "mirror.toml"
    path.write_text(toml_text(config))
    for image in ORDER:  # one at a time: each tag is confirmed a little later
        result = run_mirror(path, "prefetch", f"{UPSTREAM_PREFIX}/{image}")
        assert result.returncode == 0, result.stderr
        time.sleep(1.1)
    cache = tmp_path / "cache"
    before = _stored(cache)
    total = sum(p.stat().st_size for p in (cache / "blobs" / "sha256").glob("*/*"))

    dry = run_mirror(path, "gc", "--max-size", str(total - 1), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would evict {UPSTREAM_PREFIX}/tools/alpha:1.0" in dry.stdout
    assert _stored(cache) == before

    young = run_mirror(path, "gc", "--max-size", str(total - 1), "--older-than", "1d")
    assert "still above" in young.stdout and _stored(cache) == before

    run = run_mirror(path, "gc", "--max-size", str(total - 1))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == f"evicted {UPSTREAM_PREFIX}/tools/alpha:1.0"
    alpha, beta = seeded["tools/alpha:1.0"], seeded["tools/beta:2.0"]
    beta_blobs = {b["digest"][7:] for b in beta.blobs}
    alpha_only = {b["digest"][7:] for b in alpha.blobs} - beta_blobs
    after = _stored(cache)
    assert alpha_only and not alpha_only & after
    assert beta_blobs <= after  # the shared base layer stayed with tools/beta
    assert seeded["big/blob:1.0"].layers[0]["digest"][7:] in after  # pinned, though oldest
    assert alpha.digest[7:] not in after
    assert not (cache / "repositories" / UPSTREAM_PREFIX / "tools/alpha/_tags/1.0").exists()

    everything = run_mirror(path, "gc", "--max-size", "0")
    assert seeded["big/blob:1.0"].layers[0]["digest"][7:] in _stored(cache)
    assert "still above" in everything.stdout
