"""A containerd daemon of a test's own: its root, state, sockets and config all under one
work directory, no CRI plugin, started and stopped by its PID. `ctr` pulls through it
(see `clients.ctr_pull`); nothing of the machine's own containerd is touched."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Self

from .processes import spawn_logged, stop_process

CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
NAMESPACE = "hpc-mirror-tests"


class ContainerdDaemon:
    """`containerd --config <workdir>/config.toml`; `ctr(...)` runs ctr against it."""

    def __init__(self, workdir: Path, start_timeout: float = 30.0) -> None:
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.address = workdir / "containerd.sock"  # unix sockets: keep the path short
        self.log_path = workdir / "containerd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.toml"
        w = self.workdir
        config.write_text(
            f"""version = 2
root = "{w / "root"}"
state = "{w / "state"}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.address}"
[ttrpc]
  address = "{w / "containerd-ttrpc.sock"}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{w / "opt"}"
"""
        )
        self._process = spawn_logged([CONTAINERD, "--config", str(config)], self.log_path)
        deadline = time.monotonic() + self.start_timeout
        while self.ctr("version", check=False).returncode != 0:
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = self.log_path.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"containerd did not start:\n{log}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process)

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """`ctr --address <socket> --namespace hpc-mirror-tests <args>`; with `check`, fail
        with ctr's stderr (never its arguments, which may hold a password)."""
        result = subprocess.run(
            [CTR, "--address", str(self.address), "--namespace", NAMESPACE, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, f"ctr {args[0]} failed: {result.stderr}"
        return result

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
