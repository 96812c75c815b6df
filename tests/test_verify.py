"""`mirror verify` finds a corrupted blob, quarantines it, and the next pull heals it."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from tests.conftest import upstream_entry
from tests.support.proxy import toml_text


def test_verify_quarantines_a_corrupt_blob_and_a_pull_heals_it(make_proxy, upstream, seeded):
    proxy = make_proxy({"u": upstream_entry(upstream.url)})
    image = seeded["tools/beta:2.0"]
    for blob in image.blobs:
        assert requests.get(f"{proxy.url}/v2/tools/beta/blobs/{blob['digest']}", timeout=30).ok
        proxy.wait_stored(blob["digest"])
    victim = image.layers[0]["digest"]
    path = proxy.cache_root / "blobs" / "sha256" / victim[7:9] / victim[7:]
    os.chmod(path, 0o644)
    with open(path, "r+b") as blob:
        blob.seek(100)
        original = blob.read(1)
        blob.seek(100)
        blob.write(bytes([original[0] ^ 0xFF]))
    config_path = proxy.workdir / "verify.toml"
    config_path.write_text(toml_text(proxy.config))
    result = subprocess.run(
        [sys.executable, "-m", "mirror.cli", "verify", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"corrupt {victim}" in " ".join(result.stderr.split())
    assert not path.exists()
    assert (proxy.cache_root / "quarantine" / "sha256" / victim[7:]).exists()
    healed = requests.get(f"{proxy.url}/v2/tools/beta/blobs/{victim}", timeout=30)
    assert healed.status_code == 200 and healed.content == image.blob_data[victim]
    proxy.wait_stored(victim)
    again = subprocess.run(
        [sys.executable, "-m", "mirror.cli", "verify", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert f"checked {len(image.blobs)} blobs" in again.stderr
