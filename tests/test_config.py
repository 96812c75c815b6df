"""Config loading: the embedded default, merging, and one clear message per problem."""

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror import config
from mirror.errors import ConfigError
from tests.support.tls import make_loopback_ca


def test_embedded_default_has_the_three_public_upstreams():
    cfg = config.load()
    assert cfg.server.host == "127.0.0.1"
    assert cfg.server.port == 5000
    assert cfg.cache.tag_ttl_seconds == 300
    prefixes = {u.prefix: u for u in cfg.upstreams}
    assert set(prefixes) == {"docker.io", "ghcr.io", "quay.io"}
    assert cfg.default_upstream.prefix == "docker.io"
    assert prefixes["docker.io"].library_namespace == "library"


def test_embedded_default_is_the_project_config_toml():
    project_file = Path(__file__).parent.parent / "config.toml"
    assert config.default_config_text() == project_file.read_text()


def test_site_file_merges_over_defaults_and_replaces_upstreams(tmp_path, monkeypatch):
    monkeypatch.setenv("SITE_PW", "s3cret")
    site = tmp_path / "site.toml"
    site.write_text(
        '[server]\nport = 6000\n[cache]\nroot = "data"\n'
        '[upstreams.internal]\nurl = "http://127.0.0.1:9999"\nprefix = "reg.site"\n'
        'username = "robot"\npassword_env = "SITE_PW"\n'
    )
    cfg = config.load(site)
    assert cfg.server.port == 6000 and cfg.server.host == "127.0.0.1"
    assert cfg.cache.root == tmp_path / "data"
    assert [u.prefix for u in cfg.upstreams] == ["reg.site"]
    assert cfg.upstreams[0].password == "s3cret"
    assert "s3cret" not in repr(cfg)


def test_every_problem_is_reported_with_file_and_key(tmp_path):
    site = tmp_path / "bad.toml"
    site.write_text(
        '[server]\nport = "x"\nhots = "a"\n[cache]\ntag_ttl_seconds = -1\n'
        '[upstreams.a]\nurl = "ftp://x"\nprefix = "A B"\npassword = "p"\n'
        '[upstreams.b]\nurl = "https://b.example"\nprefix = "b.io"\n'
        'password_env = "NOPE_NOT_SET_VAR"\nusername = "u"\n'
    )
    with pytest.raises(ConfigError) as caught:
        config.load(site)
    text = str(caught.value)
    for expected in (
        "server.port: must be int",
        "server.hots: unknown key",
        "cache.tag_ttl_seconds: must be >= 0",
        "upstreams.a.url: must be http",
        "upstreams.a.prefix",
        "upstreams.a.password: never put a password",
        "upstreams.b.password_env: environment variable 'NOPE_NOT_SET_VAR'",
    ):
        assert expected in text
    assert all(line.startswith(str(site)) for line in text.splitlines())


def test_cli_exits_2_naming_the_file_and_key(tmp_path):
    site = tmp_path / "bad.toml"
    site.write_text("[server]\nport = 70000\n")
    result = subprocess.run(
        [sys.executable, "-m", "mirror.cli", "serve", "--config", str(site)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"{site}: server.port: must be 1-65535" in result.stderr


def test_invalid_toml_and_missing_file(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(broken)
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "absent.toml")


def test_fixed_tables_take_their_defaults_from_config_toml_alone():
    import tomllib

    defaults = tomllib.loads(config.default_config_text())
    cfg = config.load()
    for table in ("server", "client"):
        for key, value in defaults[table].items():
            expected = None if value == "" else value  # an empty path is "not set"
            assert getattr(getattr(cfg, table), key) == expected, f"{table}.{key}"
    for key in (
        "tag_ttl_seconds",
        "max_stale_seconds",
        "manifest_memory_mib",
        "fill_stale_seconds",
    ):
        assert getattr(cfg.cache, key) == defaults["cache"][key], f"cache.{key}"
    assert cfg.catalog.title == defaults["catalog"]["title"]
    assert cfg.catalog.serve is defaults["catalog"]["serve"]


def test_an_upstream_needs_url_and_prefix_and_defaults_the_rest(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(
        '[upstreams.a]\nmode = "offline"\n'
        '[upstreams.b]\nurl = "https://b.example"\nprefix = "b.io"\n'
    )
    with pytest.raises(ConfigError) as caught:
        config.load(site)
    assert caught.value.problems == ["upstreams.a.url: missing", "upstreams.a.prefix: missing"]
    site.write_text('[upstreams.b]\nurl = "https://b.example"\nprefix = "b.io"\n')
    (upstream,) = config.load(site).upstreams
    assert (upstream.default, upstream.library_namespace, upstream.offline, upstream.username) == (
        False,
        "",
        False,
        "",
    )


def test_a_wrong_type_names_the_key_and_parsing_goes_on(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(
        '[client]\nretries = 1.5\nread_timeout_seconds = 0\n[catalog]\nserve = "yes"\n'
        '[cache]\npins = "alpine"\n'
    )
    with pytest.raises(ConfigError) as caught:
        config.load(site)
    assert sorted(caught.value.problems) == [
        "cache.pins: must be list, got 'alpine'",
        "catalog.serve: must be bool, got 'yes'",
        "client.read_timeout_seconds: must be > 0",
        "client.retries: must be int, got 1.5",
    ]


def test_an_empty_password_is_refused_at_start(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPTY_PW", "")
    (tmp_path / "pw").write_text("\n")
    site = tmp_path / "site.toml"
    site.write_text(
        '[upstreams.a]\nurl = "https://a.example"\nprefix = "a.io"\n'
        'username = "u"\npassword_env = "EMPTY_PW"\n'
        '[upstreams.b]\nurl = "https://b.example"\nprefix = "b.io"\n'
        'username = "u"\npassword_file = "pw"\n'
    )
    with pytest.raises(ConfigError) as caught:
        config.load(site)
    assert caught.value.problems == [
        "upstreams.a.password_env: environment variable 'EMPTY_PW' is empty",
        f"upstreams.b.password_file: {tmp_path / 'pw'} is empty",
    ]


@pytest.mark.parametrize(
    "tls, with_certificate, https",
    [("auto", False, False), ("auto", True, True), ("on", False, True), ("off", True, False)],
)
def test_catalog_shows_https_commands_when_tls_says_so(tmp_path, tls, with_certificate, https):
    server = {}
    if with_certificate:
        ca = make_loopback_ca(tmp_path / "listener-ca")
        server = {"tls_cert": str(ca.cert_file), "tls_key": str(ca.key_file)}
    cfg = config.load(None, {"server": server, "catalog": {"tls": tls}})
    assert cfg.server.tls is with_certificate
    assert cfg.catalog.https is https


def test_ca_file_is_a_pem_bundle_relative_to_the_config_file(tmp_path):
    make_loopback_ca(tmp_path / "site-ca")
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    site = tmp_path / "site.toml"
    site.write_text(
        '[upstreams.harbor]\nurl = "https://harbor.example"\nprefix = "harbor.example"\n'
        'ca_file = "site-ca/ca.pem"\n'
        '[upstreams.hub]\nurl = "https://hub.example"\nprefix = "hub.example"\n'
    )
    harbor, hub = config.load(site).upstreams
    assert harbor.ca_file == tmp_path / "site-ca" / "ca.pem"
    assert hub.ca_file is None
    site.write_text(
        '[upstreams.a]\nurl = "https://a.example"\nprefix = "a.io"\nca_file = "missing.pem"\n'
        '[upstreams.b]\nurl = "https://b.example"\nprefix = "b.io"\nca_file = "notes.txt"\n'
        '[upstreams.c]\nurl = "https://c.example"\nprefix = "c.io"\nca_file = "site-ca"\n'
    )
    with pytest.raises(ConfigError) as caught:
        config.load(site)
    assert caught.value.problems == [
        f"upstreams.a.ca_file: cannot read {tmp_path / 'missing.pem'}: No such file or directory",
        f"upstreams.b.ca_file: {tmp_path / 'notes.txt'} holds no PEM certificate",
        f"upstreams.c.ca_file: cannot read {tmp_path / 'site-ca'}: Is a directory",
    ]


def test_urls_that_cannot_be_split_are_problems_not_tracebacks():
    """Found by the property test below: an unclosed IPv6 bracket made urlsplit raise."""
    with pytest.raises(ConfigError) as caught:
        config.load(None, {"auth": {"realm": "http://[", "ldap": {"url": "ldap://[::1"}}})
    assert caught.value.problems == [
        "auth.realm: must be an http(s):// URL, got 'http://['",
        "auth.ldap.url: must be ldap://host[:port] or ldaps://host[:port]",
        "auth.ldap: set user_dn_template, or search_base and search_filter (one way)",
    ]


TEXTS = (
    st.text(max_size=20)
    | st.text(st.sampled_from("ab:/[]\x00.1-~"), max_size=12)
    | st.sampled_from(["http://[::1", "https://h:99999", "https://h.example", "./x", ""])
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    TEXTS,
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
TABLES = st.sampled_from(
    ["server", "cache", "client", "catalog", "auth", "sif", "upstreams", "nonsense"]
)
KEYS = st.sampled_from(
    [
        "host",
        "port",
        "root",
        "index_dir",
        "tag_ttl_seconds",
        "pins",
        "retries",
        "read_timeout_seconds",
        "mirror_url",
        "serve",
        "out",
        "sif_tree",
        "max_rootfs_bytes",
        "platform",
        "namespace",
        "url",
        "prefix",
        "mode",
        "default",
        "password_file",
        "ca_file",
        "tls_cert",
        "tls",
        "htpasswd",
        "ldap",
        "access",
        "users",
        "groups",
        "rules",
        "x",
    ]
)


# No deadline: each example reads the embedded config file, which a loaded machine slows.
@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(
        TABLES,
        st.dictionaries(KEYS, VALUES | st.dictionaries(KEYS, VALUES), max_size=4),
        max_size=3,
    )
)
def test_any_config_loads_or_names_every_problem(tmp_path, data):
    data = {table: {k: v for k, v in keys.items() if v is not None} for table, keys in data.items()}
    try:
        cfg = config.load(None, data)
    except ConfigError as exc:
        assert exc.problems and all(": " in problem for problem in exc.problems)
        return
    assert 0 < cfg.server.port < 65536 and cfg.client.retries >= 0


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"cache": {"root": "a\x00b"}}, "cache.root: a path cannot contain a NUL byte"),
        ({"cache": {"root": ""}}, "cache.root: must name a directory"),
        ({"cache": {"tag_ttl_seconds": float("nan")}}, "cache.tag_ttl_seconds: must be a finite"),
        ({"upstreams": {"a": {"url": "http://[::1", "prefix": "a"}}}, "upstreams.a.url: must be"),
        ({"upstreams": {"a": {"url": "http://a:99999", "prefix": "a"}}}, "upstreams.a.url: must"),
    ],
)
def test_values_that_once_crashed_the_parser_are_config_errors(table, expected):
    with pytest.raises(ConfigError) as caught:
        config.load(None, table)
    assert any(problem.startswith(expected) for problem in caught.value.problems)


@pytest.mark.parametrize(
    ("pins", "problem"),
    [
        ('["Docker.io/Alpine"]', "cache.pins: 'Docker.io/Alpine':"),
        ('["docker.io/alpine", 3]', "cache.pins: 3 is not an image name"),
        ('["docker.io/alpine:bad tag"]', "cache.pins: 'docker.io/alpine:bad tag':"),
        ('[""]', "cache.pins: '' is not an image name"),
    ],
)
def test_every_bad_pin_is_named(tmp_path, pins, problem):
    site = tmp_path / "site.toml"
    site.write_text(f"[cache]\npins = {pins}\n")
    with pytest.raises(ConfigError) as caught:
        config.load(site)
    assert problem in str(caught.value)


def test_good_pins_load(tmp_path):
    site = tmp_path / "site.toml"
    good = [
        "docker.io/library/alpine:3.20",
        "ghcr.io/org/tool",
        "registry:5000/x@sha256:" + "a" * 64,
    ]
    site.write_text(f"[cache]\npins = {good!r}\n".replace("'", '"'))
    assert config.load(site).cache.pins == tuple(good)


@pytest.mark.parametrize(
    "metrics_port, problem",
    [
        (70000, "server.metrics_port: must be 1-65535, or 0 for the main port, got 70000"),
        (6000, "server.metrics_port: 6000 is server.port; use 0 to serve /metrics there"),
    ],
)
def test_metrics_port_is_another_port_or_0(tmp_path, metrics_port, problem):
    site = tmp_path / "site.toml"
    site.write_text(f"[server]\nport = 6000\nmetrics_port = {metrics_port}\n")
    with pytest.raises(ConfigError) as caught:
        config.load(site)
    assert problem in str(caught.value)
    assert config.load().server.metrics_port == 0  # the default: /metrics on the main port


def test_sif_table_defaults_and_sizes():
    sif = config.load().sif
    assert (sif.namespace, sif.platform, sif.compression) == ("sif", "linux/amd64", "gzip")
    assert (sif.max_wait_seconds, sif.max_parallel) == (600, 1)
    assert sif.max_rootfs_bytes == 64 << 30
    assert config.load(None, {"sif": {"max_rootfs_bytes": 1000}}).sif.max_rootfs_bytes == 1000
    assert config.load(None, {"sif": {"max_rootfs_bytes": "1.5T"}}).sif.max_rootfs_bytes == 3 << 39


@pytest.mark.parametrize(
    ("sif", "problem"),
    [
        ({"namespace": "Sif"}, "sif.namespace: 'Sif' is not a repository name component"),
        ({"namespace": "a/b"}, "sif.namespace: 'a/b' is not a repository name component"),
        ({"platform": "amd64"}, "sif.platform: must be os/architecture[/variant]"),
        ({"compression": "lz4"}, 'sif.compression: must be one of "gzip", "zstd", "xz"'),
        ({"max_parallel": 0}, "sif.max_parallel: must be >= 1"),
        ({"max_wait_seconds": -1}, "sif.max_wait_seconds: must be >= 0"),
        ({"max_rootfs_bytes": "lots"}, "sif.max_rootfs_bytes: not a size: 'lots'"),
        ({"max_rootfs_bytes": 0}, "sif.max_rootfs_bytes: must be at least 1 byte"),
        ({"max_rootfs_bytes": True}, "sif.max_rootfs_bytes: must be int or str"),
        ({"convert": 1}, "sif.convert: unknown key"),
    ],
)
def test_every_bad_sif_key_is_named(sif, problem):
    with pytest.raises(ConfigError) as caught:
        config.load(None, {"sif": sif})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
