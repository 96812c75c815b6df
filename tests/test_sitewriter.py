"""The site writer: atomic per-file replacement, untouched unchanged files, deletion last,
and no path outside the site."""

import os

import pytest

from mirror.catalog.site_writer import SiteWriter, UnsafePath


def _build(out, pages: dict[str, str]) -> SiteWriter:
    writer = SiteWriter(out)
    for path, text in pages.items():
        writer.write(path, text)
    writer.commit()
    return writer


def test_files_are_written_and_removed_pages_deleted_at_commit(tmp_path):
    out = tmp_path / "site"
    _build(out, {"index.html": "v1", "r/a/b/index.html": "deep", "gone.html": "old"})
    writer = SiteWriter(out)
    writer.write("index.html", "v2")
    assert (out / "gone.html").exists()  # still linked from what readers may hold open
    writer.commit()
    assert (out / "index.html").read_text() == "v2"
    assert not (out / "gone.html").exists()
    assert not (out / "r").exists()  # emptied directories go too
    assert sorted(p.name for p in out.iterdir()) == [".render-state.json", "index.html"]


def test_a_replaced_file_is_swapped_in_whole(tmp_path):
    """Readers holding the old file keep reading a whole old file; the path names the
    whole new one (rename over it, not truncate-and-write)."""
    out = tmp_path / "site"
    _build(out, {"index.html": "old content"})
    with open(out / "index.html") as held:
        _build(out, {"index.html": "new content"})
        assert held.read() == "old content"
    assert (out / "index.html").read_text() == "new content"
    assert [p.name for p in out.iterdir() if ".tmp" in p.name] == []


def test_unchanged_files_are_not_touched(tmp_path):
    out = tmp_path / "site"
    _build(out, {"a.html": "A", "b.html": "B"})
    before = os.stat(out / "a.html")
    second = _build(out, {"a.html": "A", "b.html": "B2"})
    assert (second.reused, second.written) == (1, 1)
    after = os.stat(out / "a.html")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (out / "b.html").read_text() == "B2"


def test_keep_carries_a_file_over_without_rewriting(tmp_path):
    out = tmp_path / "site"
    _build(out, {"a.html": "A", "b.html": "B"})
    writer = SiteWriter(out)
    assert writer.keep("a.html") and not writer.keep("never.html")
    writer.commit()
    assert (out / "a.html").read_text() == "A" and not (out / "b.html").exists()


def test_commit_records_state_for_the_next_render(tmp_path):
    out = tmp_path / "site"
    writer = SiteWriter(out)
    writer.write("a.html", "A")
    writer.commit({"repos": {"x": 1}})
    assert SiteWriter(out).previous == {"repos": {"x": 1}}


@pytest.mark.parametrize(
    "path",
    [
        "../escape.html",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "./a",
        "a\\..\\b",
        "nul\x00.html",
        ".render-state.json",
    ],
)
def test_paths_outside_the_site_are_refused(tmp_path, path):
    writer = SiteWriter(tmp_path / "site")
    with pytest.raises(UnsafePath):
        writer.write(path, "x")
    assert not (tmp_path / "escape.html").exists()


def test_a_planted_symlink_cannot_redirect_writes(tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "r").symlink_to(tmp_path)
    (out / "page.html").symlink_to(tmp_path / "target.html")
    writer = SiteWriter(out)
    for path in ("r/escape.html", "page.html"):
        with pytest.raises(UnsafePath):
            writer.write(path, "x")
    assert not (tmp_path / "escape.html").exists() and not (tmp_path / "target.html").exists()
