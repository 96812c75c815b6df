"""Real clients, pulling through a proxy as users do: skopeo, the oras Python SDK, and a
plain HTTP GET that hashes what it receives."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import oras.client
import requests

from .proxy import UPSTREAM_PREFIX


def skopeo_copy(host: str, reference: str, dest: str, *extra: str) -> None:
    """`skopeo copy docker://<host>/up.test/<reference> <dest>`, digests preserved."""
    result = subprocess.run(
        [
            "skopeo",
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            *extra,
            f"docker://{host}/{UPSTREAM_PREFIX}/{reference}",
            dest,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr


def oras_pull(host: str, reference: str, outdir: Path) -> list[str]:
    """Pull an artifact with the oras SDK; returns the files it wrote."""
    client = oras.client.OrasClient(hostname=host, insecure=True)
    return client.pull(target=f"{host}/{UPSTREAM_PREFIX}/{reference}", outdir=str(outdir))


def skopeo_login(
    host: str, user: str, password: str, authfile: Path
) -> subprocess.CompletedProcess:
    """`skopeo login` to the mirror, the password on stdin, credentials kept in `authfile`."""
    return subprocess.run(
        [
            "skopeo",
            "login",
            "--tls-verify=false",
            "--authfile",
            str(authfile),
            "--username",
            user,
            "--password-stdin",
            host,
        ],
        input=password,
        capture_output=True,
        text=True,
        timeout=120,
    )


def oras_login_pull(host: str, user: str, password: str, reference: str, outdir: Path) -> list[str]:
    """Log in with the oras SDK (its docker config kept under `outdir`), then pull."""
    client = oras.client.OrasClient(hostname=host, insecure=True)
    client.login(
        username=user, password=password, hostname=host, config_path=str(outdir / "config.json")
    )
    return client.pull(target=f"{host}/{UPSTREAM_PREFIX}/{reference}", outdir=str(outdir))


def fetch_sha256(url: str, timeout: float = 120) -> tuple[int, str, int]:
    """GET `url`, streamed: (status, "sha256:<hex>" of the body, its length)."""
    digest = hashlib.sha256()
    size = 0
    with requests.get(url, stream=True, timeout=timeout) as response:
        for chunk in response.iter_content(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        return response.status_code, f"sha256:{digest.hexdigest()}", size
