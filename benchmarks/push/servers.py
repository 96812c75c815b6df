"""The two registries a push run compares, each with token auth and storage on the same
disk: hpc-mirror with [auth] (htpasswd) and [local], and distribution (`docker-registry`,
filesystem storage) trusting a token issuer of the run. Both log at warning/error level and
write no access log."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.proxy.servers import BaselineRegistry
from tests.support.accounts import write_htpasswd
from tests.support.proxy import ProxyProcess, proxy_config, upstream_entry
from tests.support.token_issuer import TokenIssuer

USER = "bench"
PASSWORD = "bench-push-pw"
LOCAL_PREFIX = "local"
PROFILED = Path(__file__).with_name("profiled.py")


def mirror_registry(
    workdir: Path, unused_upstream: str, profile_to: Path | None = None
) -> ProxyProcess:
    """hpc-mirror taking pushes to `local/<USER>/...` from USER (tokens from its own realm).
    An upstream is required by the config; `unused_upstream` is never asked. With
    `profile_to`, it runs under cProfile and writes its stats there when it stops."""
    workdir.mkdir(parents=True, exist_ok=True)
    htpasswd = write_htpasswd(workdir / "htpasswd", {USER: PASSWORD})
    upstream = upstream_entry(unused_upstream, prefix="bench.upstream")
    config = proxy_config(workdir, {"unused": upstream}, client=None)
    config["log"] = {"access": ""}
    config["auth"] = {"htpasswd": str(htpasswd)}
    config["local"] = {"prefix": LOCAL_PREFIX, "access": "authenticated"}
    launcher = (sys.executable, str(PROFILED), str(profile_to)) if profile_to else ()
    return ProxyProcess(workdir, config, log_level="warning", start_timeout=20.0, launcher=launcher)


def distribution_registry(workdir: Path, issuer: TokenIssuer) -> BaselineRegistry:
    """`docker-registry` with filesystem storage under `workdir`, trusting `issuer`'s
    tokens; not started."""
    return BaselineRegistry(workdir=workdir, auth=("token", issuer.settings))


def token_issuer(workdir: Path) -> TokenIssuer:
    """The token realm distribution sends USER to (in this process, a thread)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return TokenIssuer(USER, PASSWORD, workdir=workdir)


def repository(server: str, name: str) -> str:
    """Where USER pushes `name` on `server` ("mirror": its own local namespace)."""
    return f"{LOCAL_PREFIX}/{USER}/{name}" if server == "mirror" else f"{USER}/{name}"
