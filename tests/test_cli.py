"""The CLI's one error printer: one `error:` line per problem, exit 2 for what the user
gave (config, arguments, list files), exit 1 for an operation that failed."""

import subprocess
import sys

import pytest


def mirror(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mirror.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


@pytest.fixture
def site(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(
        f'[cache]\nroot = "{tmp_path / "cache"}"\nindex_dir = "{tmp_path / "idx"}"\n'
        '[upstreams.a]\nurl = "http://127.0.0.1:9"\nprefix = "a.io"\n'
        "default = true\n"
    )
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gc", "--max-size", "5X"], "error: not a size: '5X'"),
        (["gc", "--max-size", "1G", "--older-than", "soon"], "error: not an age: 'soon'"),
        (["prefetch", "--file", "/nonexistent/list.txt"], "error: cannot read /nonexistent"),
        (["export", "out.tar"], "error: name images as arguments or with --file"),
    ],
)
def test_what_the_user_gave_is_one_error_line_and_exit_2(site, tmp_path, args, message):
    result = mirror(*args, "--config", str(site), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message) and "Traceback" not in result.stderr


def test_a_bad_pin_names_the_file_and_key(site, tmp_path):
    site.write_text(site.read_text().replace("[cache]\n", '[cache]\npins = ["a.io/Bad"]\n'))
    result = mirror("gc", "--max-size", "1G", "--config", str(site), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {site}: cache.pins: invalid repository name")


def test_a_failed_operation_is_one_error_line_and_exit_1(site, tmp_path):
    result = mirror("import", str(tmp_path / "absent.tar"), "--config", str(site), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: refused {tmp_path / 'absent.tar'}")
    assert "Traceback" not in result.stderr
