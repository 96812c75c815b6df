"""Run `mirror serve` as a real process on a free loopback port, as users run it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from .registry import free_port


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
    return subprocess.run([sys.executable, "-m", "mirror.cli", *args, "--config",
                           str(config_path)], capture_output=True, text=True, timeout=timeout)


def proxy_config(workdir: Path, upstreams: dict[str, dict[str, Any]], **cache: Any) -> dict:
    """A config for one test proxy: its own cache root and index under `workdir`."""
    return {
        "server": {"host": "127.0.0.1", "port": free_port()},
        "cache": {"root": str(workdir / "cache"), "index_dir": str(workdir / "index"),
                  "tag_ttl_seconds": 300, **cache},
        "client": {"connect_timeout_seconds": 2, "read_timeout_seconds": 5, "retries": 2,
                   "max_retry_wait_seconds": 1},
        "upstreams": upstreams,
    }


class ProxyProcess:
    """`python -m mirror.cli serve --config <file>` on a free port; stopped by its PID."""

    def __init__(self, workdir: Path, config: dict, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.args = args
        self.config = config
        self.config_path = workdir / f"proxy-{config['server']['port']}.toml"
        self.log_path = workdir / f"proxy-{config['server']['port']}.log"
        self.env = env or {}
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.config['server']['port']}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def cache_root(self) -> Path:
        return Path(self.config["cache"]["root"])

    def start(self) -> "ProxyProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(toml_text(self.config))
        log = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "mirror.cli", "serve", "--config", str(self.config_path),
             "--log-level", "info", *self.args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"proxy exited {self._process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/v2/", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"proxy did not start:\n{self.log()}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "ProxyProcess":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what tests look at ----------------------------------------------------------------
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
