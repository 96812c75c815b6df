"""README's "Try it locally" walk-through, run as written: scripts/try-locally."""

import json
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).parent.parent


def test_try_locally_pulls_through_the_mirror_and_renders(tmp_path):
    work = tmp_path / "try"
    result = subprocess.run(
        [REPO / "scripts" / "try-locally", str(work)], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    pulled = json.loads((work / "pulled" / "index.json").read_text())["manifests"][0]
    blob = work / "cache" / "blobs" / "sha256" / pulled["digest"][7:9] / pulled["digest"][7:]
    assert blob.is_file()  # the manifest the client got is the one the mirror cached
    catalog = json.loads((work / "site" / "catalog.json").read_text())
    assert [row["path"] for row in catalog["repositories"]] == ["local.test/demo/busybox"]
    assert f"Open {work}/site/index.html" in result.stdout
    # Both servers it started are gone: nothing answers on their ports any more.
    for log in ("registry.log", "mirror.log"):
        assert (work / log).exists()
    ports = re.findall(r"on 127\.0\.0\.1:(\d+)", result.stdout)
    assert len(ports) == 2
    for port in ports:
        probe = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/v2/"], timeout=10
        )
        assert probe.returncode == 7  # curl: could not connect
