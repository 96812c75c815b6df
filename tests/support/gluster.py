"""A real cluster filesystem for the tests: one GlusterFS volume, mounted twice.

A local directory is not a cluster filesystem: attribute caching, lock semantics and the
visibility of a growing file differ. Two FUSE mounts of one single-brick GlusterFS volume
behave like two nodes (O_EXCL is exclusive across them, a rename is seen at once, a file
growing on one mount shows its new size on the other about a second later).

glusterd runs with a private working directory, so nothing of the system's GlusterFS
state is used or left behind. GlusterFS refuses 'localhost' and '127.0.0.1' as a brick
host, so the volume uses a name that resolves to loopback (scripts/setup.sh adds
`127.0.0.1 hpc-mirror-gluster` to /etc/hosts). Needs root, glusterfs-server and FUSE.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from .processes import stop_process

HOST = "hpc-mirror-gluster"
_GLUSTERD_VOL = """volume management
    type mgmt/glusterd
    option working-directory {workdir}
    option transport-type socket
    option transport.socket.listen-port 24007
    option ping-timeout 0
    option event-threads 1
end-volume
"""


class GlusterVolume:
    """`with GlusterVolume(tmp) as (mount_a, mount_b): ...`"""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.name = f"hpcm{os.getpid()}"
        self.mounts = [workdir / "node-a", workdir / "node-b"]
        self._glusterd: subprocess.Popen | None = None
        self._mounted: list[Path] = []
        self._created = False

    def __enter__(self) -> tuple[Path, Path]:
        address = socket.gethostbyname(HOST)  # fails loudly if setup.sh was not run
        if not address.startswith("127."):
            raise RuntimeError(f"{HOST} resolves to {address}, not loopback")
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self.mounts[0], self.mounts[1]

    def _start(self) -> None:
        state = self.workdir / "glusterd"
        brick = self.workdir / "brick"
        for directory in (state, brick, *self.mounts):
            directory.mkdir(parents=True, exist_ok=True)
        volfile = self.workdir / "glusterd.vol"
        volfile.write_text(_GLUSTERD_VOL.format(workdir=state))
        self._glusterd = subprocess.Popen(
            [
                "glusterd",
                "-N",
                "-f",
                str(volfile),
                "-l",
                str(self.workdir / "glusterd.log"),
                "-p",
                str(self.workdir / "glusterd.pid"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while self._gluster("volume", "list", check=False).returncode != 0:
            if time.monotonic() > deadline or self._glusterd.poll() is not None:
                raise RuntimeError(
                    "glusterd did not start: " + (self.workdir / "glusterd.log").read_text()[-2000:]
                )
            time.sleep(0.2)
        self._gluster("volume", "create", self.name, f"{HOST}:{brick}", "force")
        self._created = True
        self._gluster("volume", "start", self.name)
        for mount in self.mounts:
            subprocess.run(
                ["mount", "-t", "glusterfs", f"{HOST}:/{self.name}", str(mount)],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self._mounted.append(mount)

    def __exit__(self, *exc_info: object) -> None:
        for mount in self._mounted:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=60)
        self._mounted.clear()
        if self._created:
            self._gluster("volume", "stop", self.name, "force", check=False)
            self._gluster("volume", "delete", self.name, check=False)
            self._created = False
        stop_process(self._glusterd, timeout=20)

    @staticmethod
    def _gluster(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["gluster", "--mode=script", *args], capture_output=True, text=True, timeout=60
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"gluster {' '.join(args)}: {result.stderr or result.stdout}")
        return result
