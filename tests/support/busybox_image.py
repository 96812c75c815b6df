"""A real image built by buildah (Debian's), with Debian's static busybox as its payload,
pushed to a registry: two layers, an Entrypoint that prints its environment and
arguments, a Cmd whose words need quoting, Env and Labels."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .clients import Buildah

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "printf", "cat", "ls", "env")
ENTRYPOINT = ["/bin/sh", "-c", 'printf "%s|" "$GREETING" "$@"; echo', "sh"]
CMD = ["a  b", "it's", "$HOME", "*"]
ENV = ["PATH=/bin", "GREETING=hello world"]
LABELS = {"org.example.test": "yes"}
# What `docker run <image>` prints: Entrypoint with Cmd as its arguments, nothing evaluated.
EXPECTED_RUN = "hello world|a  b|it's|$HOME|*|\n"


def _payload(workdir: Path) -> tuple[Path, Path]:
    """The two layers' trees: busybox with its applet links; then data with hard links,
    a setuid file and a long name."""
    base = workdir / "payload-base"
    (base / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, base / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", base / "bin" / applet)
    data = workdir / "payload-data"
    (data / "data" / "deep" / ("d" * 120)).mkdir(parents=True)
    (data / "data" / "one").write_text("shared content\n")
    os.link(data / "data" / "one", data / "data" / "two")
    (data / "data" / "deep" / ("d" * 120) / ("f" * 150)).write_text("long\n")
    tool = data / "data" / "tool"
    tool.write_text("#!/bin/sh\necho tool\n")
    os.chmod(tool, 0o4755)
    return base, data


def build_and_push(workdir: Path, registry_host: str, repository: str) -> str:
    """Build the image with buildah and push it as `<registry_host>/<repository>:1`;
    returns the pushed manifest's digest."""
    base, data = _payload(workdir)
    with Buildah(workdir / "buildah") as buildah:
        container = buildah.run("from", "scratch").stdout.strip()
        buildah.run("copy", container, str(base), "/")
        buildah.run(
            "config",
            "--entrypoint", _json_list(ENTRYPOINT),
            "--cmd", _json_list(CMD),
            *[flag for item in ENV for flag in ("--env", item)],
            *[flag for k, v in LABELS.items() for flag in ("--label", f"{k}={v}")],
            container,
        )  # fmt: skip
        buildah.run("commit", "--format", "oci", container, "busybox-base")
        container = buildah.run("from", "busybox-base").stdout.strip()
        buildah.run("copy", container, str(data), "/")
        buildah.run("commit", "--format", "oci", container, "busybox-data")
        digest_file = workdir / "pushed-digest"
        buildah.run(
            "push", "--tls-verify=false", "--digestfile", str(digest_file),
            "busybox-data", f"docker://{registry_host}/{repository}:1",
        )  # fmt: skip
        return digest_file.read_text().strip()


def _json_list(words: list[str]) -> str:
    return json.dumps(words)
