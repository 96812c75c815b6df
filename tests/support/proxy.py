"""Run `mirror serve` as a real process on a free loopback port, as users run it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .processes import LOOPBACK, ServerProcess, free_port, spawn_logged
from .tls import LoopbackCA

#: The prefix the test proxies map to their default upstream (the seeded registry).
UPSTREAM_PREFIX = "up.test"

#: Short client timeouts and few retries, so tests of failing upstreams end quickly.
TEST_CLIENT_SETTINGS: dict[str, Any] = {
    "connect_timeout_seconds": 2,
    "read_timeout_seconds": 5,
    "retries": 2,
    "max_retry_wait_seconds": 1,
}


def toml_text(tables: dict[str, Any], prefix: str = "") -> str:
    """A minimal TOML writer for test configs (strings, numbers, booleans, nested tables)."""
    scalars, nested = [], []
    for key, value in tables.items():
        if isinstance(value, dict):
            nested.append((key, value))
        else:
            scalars.append(f"{key} = {_toml_value(value)}")
    text = ""
    if scalars:
        text += (f"[{prefix}]\n" if prefix else "") + "\n".join(scalars) + "\n\n"
    for key, value in nested:
        text += toml_text(value, f"{prefix}.{key}" if prefix else key)
    return text


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):  # an inline table, e.g. one of an upstream's [[rules]]
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def run_mirror(config_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a `mirror` command (not serve) with a config file, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "mirror.cli", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def upstream_entry(registry_url: str, **extra: Any) -> dict[str, Any]:
    """An `[upstreams.<name>]` table: the default upstream, under UPSTREAM_PREFIX."""
    return {"url": registry_url, "prefix": UPSTREAM_PREFIX, "default": True, **extra}


def proxy_config(
    workdir: Path,
    upstreams: dict[str, dict[str, Any]],
    *,
    client: dict[str, Any] | None = TEST_CLIENT_SETTINGS,
    **cache: Any,
) -> dict:
    """A config for one proxy: its own cache root and index under `workdir`, the tests'
    client settings (`client=None`: the proxy's defaults) and `cache` overrides."""
    config: dict[str, Any] = {
        "server": {"host": LOOPBACK, "port": free_port()},
        "cache": {
            "root": str(workdir / "cache"),
            "index_dir": str(workdir / "index"),
            "tag_ttl_seconds": 300,
            **cache,
        },
    }
    if client is not None:
        config["client"] = dict(client)
    config["upstreams"] = upstreams
    return config


class ProxyProcess(ServerProcess):
    """`python -m mirror.cli serve --config <file>` on a free port; stopped by its PID.
    With `listener_ca`, it serves HTTPS with that CA's server certificate (`url` is then
    https://, and `tls` a client context trusting the CA)."""

    name = "mirror serve"

    def __init__(
        self,
        workdir: Path,
        config: dict,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        log_level: str = "info",
        start_timeout: float = 15.0,
        launcher: tuple[str, ...] = (),
        listener_ca: LoopbackCA | None = None,
    ) -> None:
        super().__init__(start_timeout)
        if listener_ca is not None:
            config["server"]["tls_cert"] = str(listener_ca.cert_file)
            config["server"]["tls_key"] = str(listener_ca.key_file)
            self.tls = listener_ca.client_context()
        self.workdir = workdir
        self.args = args
        self.launcher = launcher  # a command the proxy runs under, e.g. ("prlimit", "--nofile=256")
        self.config = config
        if config.get("auth"):  # a mirror with logins challenges anonymous /v2/ requests
            self.ready_statuses = (200, 401)
        self.log_level = log_level
        self.config_path = workdir / f"proxy-{self.port}.toml"
        self.log_path = workdir / f"proxy-{self.port}.log"
        self.env = env or {}

    @property
    def port(self) -> int:
        """The port in the config, so a retry on another port rewrites the config."""
        return self.config["server"]["port"]

    @port.setter
    def port(self, value: int) -> None:
        self.config["server"]["port"] = value

    @property
    def cache_root(self) -> Path:
        return Path(self.config["cache"]["root"])

    def blob_path(self, hex_digest: str) -> Path:
        """Where the store keeps a blob once it is complete."""
        return self.cache_root / "blobs" / "sha256" / hex_digest[:2] / hex_digest

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(toml_text(self.config))
        command = [
            *self.launcher,
            sys.executable,
            "-m",
            "mirror.cli",
            "serve",
            "--config",
            str(self.config_path),
            "--log-level",
            self.log_level,
            *self.args,
        ]
        return spawn_logged(command, self.log_path, env={**os.environ, **self.env})

    def _answers(self) -> bool:
        """Ready once the port answers and, with `--workers N`, every worker said it
        listens: a worker still starting has not bound the port (nor set its signals)."""
        if not super()._answers():
            return False
        workers = self._workers()
        return workers == 1 or self.log().count("listening on ") >= workers

    def _workers(self) -> int:
        if "--workers" in self.args:
            return int(self.args[self.args.index("--workers") + 1])
        return 1

    def _failure_log(self) -> str:
        return self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- what tests look at ----------------------------------------------------------------
    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """The log once it holds `text`: a line about a failed fill may come a moment after
        the client's response was cut and the temp file deleted."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the proxy's log:\n{log[-3000:]}")
            time.sleep(0.05)
        return log

    def stored_blobs(self) -> dict[str, int]:
        """Every file under a final blob path: hex digest -> size."""
        root = self.cache_root / "blobs" / "sha256"
        return {p.name: p.stat().st_size for p in root.glob("*/*")} if root.exists() else {}

    def wait_stored(self, digest: str, timeout: float = 20.0) -> int:
        """Size of a blob once it is under its final path. Clients get their last byte
        when the digest verifies; the fsync and rename into place follow right after."""
        hex_digest = digest.split(":")[-1]
        deadline = time.monotonic() + timeout
        while (size := self.stored_blobs().get(hex_digest)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{digest} never appeared in the store")
            time.sleep(0.05)
        return size

    def temp_files(self) -> list[Path]:
        tmp = self.cache_root / "tmp"
        return list(tmp.iterdir()) if tmp.exists() else []
