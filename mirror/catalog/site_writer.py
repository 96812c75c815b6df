"""Writes a static site in place, file by file, so that readers never see a broken site.

Each file is replaced atomically (written beside itself, then renamed over the old one);
a file that did not exist before is written directly, since nothing links to it yet. The
catalog writes leaves first (manifest pages, then repository pages, then the index), and
files that left the site are deleted only at `commit`, after every page that linked to
them was rewritten: a reader on file:// or behind a web server never opens a half-written
page or follows a link to a missing one. A file whose fingerprint matches the previous
render is not touched at all, which is what makes an incremental render cheap. Every path
is checked to stay inside the output directory whatever a repository is called.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = ".render-state.json"


class UnsafePath(ValueError):
    """A page path that would leave the output directory."""


class SiteWriter:
    def __init__(self, out: Path, old_files: dict[str, str] | None = None) -> None:
        """`old_files` makes a helper writer for another process: it writes files but
        leaves reading and committing the state to the main writer (see `merge`)."""
        out.mkdir(parents=True, exist_ok=True)
        self.out = out.resolve()
        state = self._read_state() if old_files is None else {"files": old_files}
        self.previous: dict[str, Any] = state.get("extra", {})
        self._old_files: dict[str, str] = state.get("files", {})
        self._files: dict[str, str] = {}
        self._safe_dirs: set[str] = {""}
        self.written = 0
        self.reused = 0

    def write(self, relpath: str, content: str | bytes, fingerprint: str = "") -> None:
        """Make `relpath` hold `content`; untouched if its fingerprint (by default the
        content's hash) is what the previous render wrote."""
        data = content.encode() if isinstance(content, str) else content
        fingerprint = fingerprint or hashlib.sha256(data).hexdigest()
        if self.unchanged(relpath, fingerprint):
            return
        target = self._target(relpath)
        if relpath in self._old_files and target.exists():
            temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            temp.write_bytes(data)
            os.rename(temp, target)
        else:
            target.write_bytes(data)
        self._files[relpath] = fingerprint
        self.written += 1

    def unchanged(self, relpath: str, fingerprint: str) -> bool:
        """True (and the file kept) when the previous render wrote `relpath` with the same
        fingerprint; the caller can then skip rendering it."""
        if self._old_files.get(relpath) != fingerprint:
            return False
        self._files[relpath] = fingerprint
        self.reused += 1
        return True

    def keep(self, relpath: str) -> bool:
        """Keep a file of the previous render as it is; False if there was none."""
        fingerprint = self._old_files.get(relpath)
        if fingerprint is None:
            return False
        self._files[relpath] = fingerprint
        self.reused += 1
        return True

    def old_files_under(self, prefixes: list[str]) -> dict[str, str]:
        """The previous render's files below these directories (for a helper writer)."""
        wanted = tuple(f"{prefix}/" for prefix in prefixes)
        return {path: fp for path, fp in self._old_files.items() if path.startswith(wanted)}

    @property
    def files(self) -> dict[str, str]:
        return dict(self._files)

    def merge(self, files: dict[str, str], written: int, reused: int) -> None:
        """Adopt what a helper writer in another process wrote or kept."""
        self._files.update(files)
        self.written += written
        self.reused += reused

    def commit(self, extra: dict[str, Any] | None = None) -> None:
        """Delete what left the site (last: nothing links to it any more), then record
        what this render wrote, with the caller's `extra` state for the next render."""
        for relpath in sorted(set(self._old_files) - set(self._files), reverse=True):
            path = self.out / relpath
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            self._remove_empty_parents(path.parent)
        state = {"files": self._files, "extra": extra or {}}
        temp = self.out / f".{STATE_FILE}.{os.getpid()}.tmp"
        temp.write_text(json.dumps(state, sort_keys=True, separators=(",", ":")))
        os.rename(temp, self.out / STATE_FILE)

    def _target(self, relpath: str) -> Path:
        parts = relpath.split("/")
        if (
            any(part in ("", ".", "..") or part.startswith(".") for part in parts)
            or "\x00" in relpath
            or "\\" in relpath
        ):
            raise UnsafePath(f"refusing to write outside the site: {relpath!r}")
        parent = "/".join(parts[:-1])
        if parent not in self._safe_dirs:
            directory = self.out.joinpath(*parts[:-1])
            directory.mkdir(parents=True, exist_ok=True)
            # A symlink planted anywhere on the way would lead outside: resolve once per
            # directory, not once per file.
            if not directory.resolve().is_relative_to(self.out):
                raise UnsafePath(f"refusing to write outside the site: {relpath!r}")
            self._safe_dirs.add(parent)
        target = self.out.joinpath(*parts)
        if target.is_symlink():
            raise UnsafePath(f"refusing to write through a symlink: {relpath!r}")
        return target

    def _remove_empty_parents(self, directory: Path) -> None:
        while directory != self.out and directory.is_relative_to(self.out):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.out / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}
