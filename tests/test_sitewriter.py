"""The site writer: atomic swap, reuse of unchanged pages, and no path outside the site."""

import os

import pytest

from mirror.sitewriter import SiteWriter, UnsafePath


def _build(out, pages: dict[str, str]) -> SiteWriter:
    writer = SiteWriter(out)
    for path, text in pages.items():
        if not writer.unchanged(path, f"fp-{text}"):
            writer.write(path, text, f"fp-{text}")
    writer.commit()
    return writer


def test_commit_replaces_the_site_and_keeps_top_level_dotfiles(tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / ".gitkeep").write_text("")
    (out / "stale.html").write_text("old")
    _build(out, {"index.html": "new", "r/a/b/index.html": "deep"})
    assert (out / "index.html").read_text() == "new"
    assert (out / "r/a/b/index.html").read_text() == "deep"
    assert (out / ".gitkeep").exists()
    assert not (out / "stale.html").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no staging left behind


def test_unchanged_pages_are_reused_by_hard_link(tmp_path):
    out = tmp_path / "site"
    _build(out, {"a.html": "A", "b.html": "B"})
    inode = os.stat(out / "a.html").st_ino
    second = _build(out, {"a.html": "A", "b.html": "B2"})
    assert (second.reused, second.written) == (1, 1)
    assert os.stat(out / "a.html").st_ino == inode
    assert (out / "b.html").read_text() == "B2"


def test_a_failed_render_leaves_the_old_site_untouched(tmp_path):
    out = tmp_path / "site"
    _build(out, {"index.html": "good"})
    writer = SiteWriter(out)
    writer.write("index.html", "half")
    writer.abort()
    assert (out / "index.html").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["site"]


def test_the_swap_is_one_step(tmp_path):
    """Readers holding the old directory open keep a whole old site; the path names the
    whole new site right after commit (renameat2 exchange, not delete-then-rename)."""
    out = tmp_path / "site"
    _build(out, {"index.html": "v1", "page.html": "v1"})
    old_fd = os.open(out, os.O_RDONLY)
    try:
        _build(out, {"index.html": "v2", "page.html": "v2"})
        assert (out / "index.html").read_text() == "v2"
        assert (out / "page.html").read_text() == "v2"
    finally:
        os.close(old_fd)


@pytest.mark.parametrize("path", ["../escape.html", "/etc/passwd", "a/../../b", "a//b",
                                  "./a", "a\\..\\b", "nul\x00.html"])
def test_paths_outside_the_site_are_refused(tmp_path, path):
    writer = SiteWriter(tmp_path / "site")
    try:
        with pytest.raises(UnsafePath):
            writer.write(path, "x")
    finally:
        writer.abort()
    assert not (tmp_path / "escape.html").exists()


def test_a_symlink_planted_in_the_staging_tree_cannot_redirect_writes(tmp_path):
    writer = SiteWriter(tmp_path / "site")
    (writer.staging / "r").symlink_to(tmp_path)
    try:
        with pytest.raises(UnsafePath):
            writer.write("r/escape.html", "x")
    finally:
        writer.abort()
    assert not (tmp_path / "escape.html").exists()
