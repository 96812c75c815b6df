"""`[auth] groups_file` in Apache's AuthGroupFile format, read again when it changes."""

from __future__ import annotations

import logging

from mirror.access.groups_file import GroupsFile


def test_groups_are_read_per_user_and_again_when_the_file_changes(tmp_path, caplog):
    now = [0.0]
    path = tmp_path / "groups"
    path.write_text(
        "# site groups\n"
        "licensed: alice  bob\n"
        "\n"
        "admins:alice\n"
        "licensed: carol\n"  # a group may continue on another line
        "bad group: dave\n"
        "no colon\n"
    )
    with caplog.at_level(logging.WARNING):
        groups = GroupsFile(path, clock=lambda: now[0])
        assert groups.groups_of("alice") == {"licensed", "admins"}
        assert groups.groups_of("carol") == {"licensed"}
        assert groups.groups_of("dave") == frozenset()
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} line {n}: not 'group: user1 user2 ...'; skipped" for n in (6, 7)
    ]
    path.write_text("licensed: bob\n")
    assert groups.groups_of("alice") == {"licensed", "admins"}  # looked at once a second
    now[0] += 1.0
    assert groups.groups_of("alice") == frozenset()
    path.unlink()
    now[0] += 1.0
    assert groups.groups_of("bob") == {"licensed"}  # a vanished file keeps the last groups
