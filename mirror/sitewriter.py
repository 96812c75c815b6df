"""Writes a static site atomically, reusing unchanged pages from the previous render.

The new site is built in a sibling directory on the same filesystem: a page whose
fingerprint matches the previous render is hard-linked from the old tree, others are
written fresh. The finished tree then takes the output directory's place in one step
(renameat2 RENAME_EXCHANGE), so a reader (a web server, a browser on file://) sees either
the old site or the new one, never a mix. Every path is checked to stay inside the output
directory whatever a repository is called.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
from pathlib import Path

STATE_FILE = ".render-state.json"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class UnsafePath(ValueError):
    """A page path that would leave the output directory."""


class SiteWriter:
    def __init__(self, out: Path) -> None:
        self.out = out.resolve()
        self.staging = self.out.parent / f".{self.out.name}.new-{os.getpid()}"
        self._old_state = self._read_state()
        self._state: dict[str, str] = {}
        self.written = 0
        self.reused = 0
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)

    def unchanged(self, relpath: str, fingerprint: str) -> bool:
        """Reuse the previous render of `relpath` if its inputs are the same; True if so."""
        target = self._target(relpath)
        old = self.out / relpath
        if self._old_state.get(relpath) != fingerprint or not old.is_file():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(old, target)
        except OSError:  # filesystems without hard links: copy
            shutil.copyfile(old, target)
        self._state[relpath] = fingerprint
        self.reused += 1
        return True

    def write(self, relpath: str, content: str | bytes, fingerprint: str = "") -> None:
        target = self._target(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        target.write_bytes(data)
        if fingerprint:
            self._state[relpath] = fingerprint
        self.written += 1

    def commit(self) -> None:
        """Carry over top-level dotfiles (.gitkeep, .htaccess), then swap the trees."""
        if self.out.is_dir():
            for entry in self.out.iterdir():
                if entry.name.startswith(".") and entry.name != STATE_FILE and entry.is_file():
                    shutil.copy2(entry, self.staging / entry.name)
        (self.staging / STATE_FILE).write_text(json.dumps(self._state, sort_keys=True))
        if self.out.is_dir() and _exchange(self.staging, self.out):
            shutil.rmtree(self.staging)  # holds the previous site now
            return
        previous = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
        if self.out.exists():
            os.rename(self.out, previous)
        os.rename(self.staging, self.out)
        shutil.rmtree(previous, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def _target(self, relpath: str) -> Path:
        parts = relpath.split("/")
        if any(part in ("", ".", "..") for part in parts) or "\x00" in relpath or \
                "\\" in relpath:
            raise UnsafePath(f"refusing to write outside the site: {relpath!r}")
        target = self.staging.joinpath(*parts)
        if not target.resolve().is_relative_to(self.staging.resolve()):
            raise UnsafePath(f"refusing to write outside the site: {relpath!r}")
        return target

    def _read_state(self) -> dict[str, str]:
        try:
            state = json.loads((self.out / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0
