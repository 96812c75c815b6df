"""Accounts of a mirror with logins, written as a site writes them: an htpasswd file by
Debian's `htpasswd -B` (bcrypt) and a groups file in Apache's AuthGroupFile format."""

from __future__ import annotations

import subprocess
from pathlib import Path


def htpasswd_add(path: Path, user: str, password: str, *flags: str) -> None:
    """Add or change `user` in the htpasswd file at `path` (created if missing); bcrypt
    unless `flags` say otherwise (`-m`, `-s`, `-p`)."""
    create = () if path.exists() else ("-c",)
    hashing = flags or ("-B",)
    subprocess.run(
        ["htpasswd", *create, "-b", *hashing, str(path), user, password],
        check=True,
        capture_output=True,
        timeout=60,
    )


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    for user, password in users.items():
        htpasswd_add(path, user, password)
    return path


def write_groups(path: Path, groups: dict[str, list[str]]) -> Path:
    path.write_text("".join(f"{group}: {' '.join(users)}\n" for group, users in groups.items()))
    return path


def auth_table(directory: Path, users: dict[str, str], groups: dict[str, list[str]]) -> dict:
    """An `[auth]` table over an htpasswd file of `users` and a groups file of `groups`,
    both written under `directory`."""
    return {
        "htpasswd": str(write_htpasswd(directory / "htpasswd", users)),
        "groups_file": str(write_groups(directory / "groups", groups)),
    }
