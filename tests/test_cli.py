"""The CLI's one error printer: one `error:` line per problem, exit 2 for what the user
gave (config, arguments, list files), exit 1 for an operation that failed."""

import socket
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
    assert result.stderr.startswith(
        f"error: {site}: cache.pins: 'a.io/Bad': invalid repository name 'Bad'"
    )


def test_a_failed_operation_is_one_error_line_and_exit_1(site, tmp_path):
    result = mirror("import", str(tmp_path / "absent.tar"), "--config", str(site), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: refused {tmp_path / 'absent.tar'}")
    assert "Traceback" not in result.stderr


def test_prefetch_checks_every_name_before_drawing_anything(site, tmp_path):
    result = mirror(
        "prefetch",
        "a.io/Upper:1",
        "a.io/ok:1",
        "a.io/x@sha256:abc",
        "--platform",
        "linux",
        "--config",
        str(site),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    first, *rest = result.stderr.splitlines()
    assert first.startswith("error: --platform 'linux': give os/architecture")
    assert "'a.io/Upper:1'" in first and "'a.io/x@sha256:abc'" in first
    assert "'a.io/ok:1'" not in first
    assert not rest and "prefetch" not in result.stderr.replace("error:", "")


def test_prefetch_shows_user_text_literally_and_whole(site, tmp_path):
    """rich reads `[...]` and `:name:` as markup and cuts wide cells: neither may touch
    what the user typed or what an upstream answered."""
    site.write_text(site.read_text() + "[client]\nretries = 0\n")
    long_name = "a.io/" + "/".join(["component"] * 9) + ":smile:"
    result = mirror("prefetch", long_name[:-1], "--config", str(site), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"failed {long_name[:-1]}:" in result.stderr
    assert "…" not in result.stderr and "😄" not in result.stderr
    table = "".join(line.strip(" │┃|") for line in result.stderr.splitlines())
    assert long_name[:-1].replace(" ", "") in table.replace(" ", "")


@pytest.mark.parametrize(
    "args",
    [["render"], ["verify"], ["gc", "--max-size", "1G"], ["export", "out.tar", "a.io/x:1"]],
)
def test_commands_that_only_read_never_create_the_cache(site, tmp_path, args):
    result = mirror(*args, "--config", str(site), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"error: no cache at {tmp_path / 'cache'}")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out.tar").exists()
    assert not list(tmp_path.glob(".out.tar*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "error: --port 0: must be 1-65535"),
        (["--workers", "0"], "error: --workers 0: must be 1 or more"),
        (["--log-level", "verbose"], "error: --log-level 'verbose': must be one of debug, info"),
    ],
)
def test_serve_options_are_reported_as_options(site, tmp_path, args, message):
    result = mirror("serve", *args, "--config", str(site), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_and_exit_2(site, tmp_path, workers):
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        result = mirror(
            "serve", "--port", str(port), "--workers", workers, "--config", str(site), cwd=tmp_path
        )
    finally:
        taken.close()
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert "Traceback" not in result.stderr


def test_a_damaged_token_key_is_one_line_at_start(site, tmp_path):
    (tmp_path / "htpasswd").write_text("")
    site.write_text(site.read_text() + f'[auth]\nhtpasswd = "{tmp_path / "htpasswd"}"\n')
    key = tmp_path / "cache" / "auth" / "token-signing.key"
    key.parent.mkdir(parents=True)
    key.write_text("not a key\n")
    result = mirror("serve", "--port", str(free_tcp_port()), "--config", str(site), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: {key} does not hold a token signing key (64 hex digits); "
        "remove it and restart every instance to make a new one"
    )
    assert "Traceback" not in result.stderr


def free_tcp_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]
