"""Real clients, pulling through a proxy as users do: skopeo, podman, containerd's ctr, the
oras Python SDK, and a plain HTTP GET that hashes what it receives. Each takes what a site
gives its users: a CA to trust for a mirror that serves HTTPS (no insecure flag then), and
credentials for a mirror that asks for them. Failures show the client's stderr, never its
command line (it may hold a password)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import oras.client
import requests

from .containerd import ContainerdDaemon
from .proxy import UPSTREAM_PREFIX


def skopeo_copy(
    host: str, reference: str, dest: str, *extra: str, cert_dir: Path | None = None
) -> None:
    """`skopeo copy docker://<host>/up.test/<reference> <dest>`, digests preserved: over
    HTTPS verified with the CA in `cert_dir` (a `ca.crt`), or, without it, over plain HTTP."""
    trust = ["--src-cert-dir", str(cert_dir)] if cert_dir else ["--src-tls-verify=false"]
    result = subprocess.run(
        [
            "skopeo",
            "copy",
            "--preserve-digests",
            *trust,
            *extra,
            f"docker://{host}/{UPSTREAM_PREFIX}/{reference}",
            dest,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr


def oras_pull(
    host: str,
    reference: str,
    outdir: Path,
    *,
    ca_file: Path | None = None,
    user: str | None = None,
    password: str | None = None,
    under: str = UPSTREAM_PREFIX,
) -> list[str]:
    """Pull an artifact `<host>/<under>/<reference>` with the oras SDK; returns the files it
    wrote. With `ca_file`, over HTTPS trusting that CA; without it, plain HTTP. With
    `user`, it logs in first."""
    if ca_file is None:
        client = oras.client.OrasClient(hostname=host, insecure=True)
    else:
        client = oras.client.OrasClient(hostname=host, tls_verify=str(ca_file))
    if user is not None:
        client.login(username=user, password=password or "", hostname=host)
    return client.pull(target=f"{host}/{under}/{reference}", outdir=str(outdir))


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


def oras_login_pull(
    host: str,
    user: str,
    password: str,
    reference: str,
    outdir: Path,
    under: str = UPSTREAM_PREFIX,
) -> list[str]:
    """Log in with the oras SDK (its docker config kept under `outdir`), then pull
    `<host>/<under>/<reference>`."""
    client = oras.client.OrasClient(hostname=host, insecure=True)
    client.login(
        username=user, password=password, hostname=host, config_path=str(outdir / "config.json")
    )
    return client.pull(target=f"{host}/{under}/{reference}", outdir=str(outdir))


# podman as root keeps its blob-info cache in /var/lib/containers/cache whatever `--root`
# says: in a mount namespace of its own, a directory of the test stands in for
# /var/lib/containers (for /var/lib where that does not exist yet).
_PRIVATE_VAR_LIB = (
    'target=/var/lib/containers; [ -d "$target" ] || target=/var/lib; '
    'mount --bind "$0" "$target" && exec "$@"'
)


class Podman:
    """podman run as root with a throw-away store: `--root`, `--tmpdir`, the vfs driver,
    its own auth file, containers.conf, registries.conf and /var/lib/containers, all
    under `workdir`, and a `--runroot` of its own under /tmp (podman refuses one longer
    than 50 characters), removed by `close()`. With `ca_file`, registries are reached over
    HTTPS trusting that CA (`--cert-dir`); `registries_conf` is the text of a
    registries.conf (mirrors)."""

    def __init__(
        self, workdir: Path, *, ca_file: Path | None = None, registries_conf: str = ""
    ) -> None:
        self.workdir = workdir
        for name in ("root", "tmp", "var-lib"):
            (workdir / name).mkdir(parents=True, exist_ok=True)
        self.runroot = Path(tempfile.mkdtemp(prefix="hpc-mirror-podman-"))
        (workdir / "containers.conf").write_text("")
        (workdir / "registries.conf").write_text(registries_conf)
        self.auth_file = workdir / "auth.json"
        self.auth_file.write_text('{"auths": {}}')
        self.cert_dir: Path | None = None
        if ca_file is not None:
            self.cert_dir = workdir / "certs"
            self.cert_dir.mkdir(exist_ok=True)
            (self.cert_dir / "ca.crt").write_bytes(ca_file.read_bytes())

    program = "podman"

    def _global_flags(self) -> list[str]:
        w = self.workdir
        return [
            "--root", str(w / "root"), "--runroot", str(self.runroot), "--tmpdir", str(w / "tmp"),
            "--storage-driver", "vfs", "--events-backend", "none",
        ]  # fmt: skip

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        w = self.workdir
        command = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _PRIVATE_VAR_LIB,
            str(w / "var-lib"),
            self.program,
            *self._global_flags(),
            *args,
        ]
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(w),
            "TMPDIR": str(w / "tmp"),
            "CONTAINERS_CONF": str(w / "containers.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(w / "registries.conf"),
            "REGISTRY_AUTH_FILE": str(self.auth_file),
        }
        result = subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=300, env=env
        )
        if check:
            assert result.returncode == 0, f"{self.program} {args[0]} failed: {result.stderr}"
        return result

    def close(self) -> None:
        shutil.rmtree(self.runroot, ignore_errors=True)

    def __enter__(self) -> Podman:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _trust(self) -> list[str]:
        return ["--cert-dir", str(self.cert_dir)] if self.cert_dir else ["--tls-verify=false"]

    def login(self, registry: str, user: str, password: str, *, check: bool = True) -> bool:
        """`podman login` (the password on stdin); whether it succeeded."""
        result = self.run(
            "login", *self._trust(), "--username", user, "--password-stdin", registry,
            stdin=password, check=check,
        )  # fmt: skip
        return result.returncode == 0

    def pull(self, reference: str, *, user: str | None = None, password: str | None = None) -> str:
        """`podman pull <reference>` (with `--creds` when `user` is given); returns the
        digest of the manifest it pulled."""
        creds = ["--creds", f"{user}:{password or ''}"] if user is not None else []
        self.run("pull", "--quiet", *self._trust(), *creds, reference)
        return self.digest(reference)

    def digest(self, reference: str) -> str:
        result = self.run("image", "inspect", "--format", "{{.Digest}}", reference)
        return result.stdout.strip()


class Buildah(Podman):
    """buildah as root in the same kind of throw-away store as `Podman` (vfs, its own
    root, runroot, config files and /var/lib/containers), for building test images."""

    program = "buildah"

    def _global_flags(self) -> list[str]:
        w = self.workdir
        return [
            "--root",
            str(w / "root"),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "vfs",
        ]


def containerd_hosts_dir(
    directory: Path, registry: str, mirror_url: str, ca_file: Path | None = None
) -> Path:
    """A containerd hosts directory sending pulls of `registry` to the mirror at
    `mirror_url` (``https://host:port``), trusting `ca_file` for it; returns `directory`."""
    host_dir = directory / registry
    host_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f'server = "https://{registry}"',
        "",
        f"[host.{json.dumps(mirror_url)}]",
        '  capabilities = ["pull", "resolve"]',
    ]
    if ca_file is not None:
        lines.append(f"  ca = {json.dumps(str(ca_file))}")
    (host_dir / "hosts.toml").write_text("\n".join(lines) + "\n")
    return directory


def ctr_pull(
    daemon: ContainerdDaemon,
    reference: str,
    hosts_dir: Path,
    *,
    user: str | None = None,
    password: str | None = None,
    platform: str = "linux/amd64",
) -> str:
    """`ctr images pull --hosts-dir <hosts_dir>` through `daemon` (native snapshotter; with
    `--user` when `user` is given); returns the digest of the image's manifest."""
    creds = ["--user", f"{user}:{password or ''}"] if user is not None else []
    daemon.ctr(
        "images", "pull", "--hosts-dir", str(hosts_dir), "--snapshotter", "native",
        "--platform", platform, *creds, reference,
    )  # fmt: skip
    listed = daemon.ctr("images", "ls", "--quiet").stdout.split()
    assert reference in listed, listed
    check = daemon.ctr("images", "check", f"name=={reference}").stdout
    assert "complete" in check, check
    info = daemon.ctr("images", "ls", f"name=={reference}").stdout.splitlines()[1].split()
    return info[2]  # REF TYPE DIGEST SIZE PLATFORMS LABELS


def fetch_sha256(url: str, timeout: float = 120) -> tuple[int, str, int]:
    """GET `url`, streamed: (status, "sha256:<hex>" of the body, its length)."""
    digest = hashlib.sha256()
    size = 0
    with requests.get(url, stream=True, timeout=timeout) as response:
        for chunk in response.iter_content(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        return response.status_code, f"sha256:{digest.hexdigest()}", size


def skopeo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`skopeo <args>` as it is (the caller checks the outcome: pushes may be refused)."""
    return subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
