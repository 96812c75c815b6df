"""`mirror check-config`: the effective config as TOML that loads back to the same Config,
secrets shown only as where they come from; `mirror --version`."""

import dataclasses
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror import __version__, config
from mirror.config_toml import to_toml
from tests.support.tls import make_loopback_ca
from tests.test_cli import mirror as mirror_cli

HUB_TOKEN = "hub-s3cret-token"
HARBOR_PASSWORD = "harbor-s3cret"
BIND_PASSWORD = "bind-s3cret"


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A site file that sets every key away from its default, with all three secret
    sources, an LDAP directory, access rules and an upstream name that needs quoting."""
    monkeypatch.setenv("HUB_TOKEN", HUB_TOKEN)
    ca = make_loopback_ca(tmp_path / "ca")
    (tmp_path / "harbor.pass").write_text(HARBOR_PASSWORD + "\n")
    (tmp_path / "bind.pass").write_text(BIND_PASSWORD)
    path = tmp_path / "site.toml"
    path.write_text(
        f"""
[server]
host = "0.0.0.0"
port = 6001
tls_cert = "{ca.cert_file}"
tls_key = "{ca.key_file}"

[cache]
root = "data/cache"
index_dir = "/var/lib/hpc-mirror/index"
tag_ttl_seconds = 60.5
max_stale_seconds = 3600
manifest_memory_mib = 16
fill_stale_seconds = 20
pins = ["docker.io/library/alpine:3.20", "site.reg/tools/x"]
sif_tree = "~/sif"

[client]
connect_timeout_seconds = 2
read_timeout_seconds = 1e3
retries = 0
max_retry_wait_seconds = 0.25
breaker_failures = 7
breaker_cooldown_seconds = 12

[catalog]
mirror_url = "mirror.example.org"
title = "Site \\"mirror\\" \\\\ caché\\t☃"
out = "/srv/www/mirror"
serve = true
tls = "auto"
include_restricted = true

[auth]
htpasswd = "/etc/hpc-mirror/htpasswd"
groups_file = "groups"
token_ttl_seconds = 120
realm = "https://mirror.example.org/token"

[auth.ldap]
url = "ldap://127.0.0.1:3890"
start_tls = true
search_base = "ou=people,dc=example,dc=org"
search_filter = "(uid={{user}})"
bind_dn = "cn=reader,dc=example,dc=org"
bind_password_file = "bind.pass"
group_base = "ou=groups,dc=example,dc=org"
group_filter = "(memberUid={{user}})"
group_attribute = "gid"
ca_file = "{ca.ca_file}"
timeout_seconds = 3
cache_seconds = 0

[upstreams.dockerhub]
url = "https://registry-1.docker.io/"
prefix = "docker.io"
default = true
library_namespace = "library"
username = "robot"
password_env = "HUB_TOKEN"
access = "authenticated"

[upstreams."site.reg"]
url = "https://harbor.example.org:8443"
prefix = "site.reg"
mode = "offline"
username = "svc"
password_file = "harbor.pass"
ca_file = "ca/ca.pem"
access = "restricted"
users = ["bob", "alice"]
groups = ["hpc"]

[[upstreams."site.reg".rules]]
repositories = ["licensed/*", "vendor-?"]
access = "restricted"
groups = ["licensed"]

[[upstreams."site.reg".rules]]
repositories = ["public/*"]
access = "anonymous"
"""
    )
    return path


def test_check_config_prints_what_loads_back_to_the_same_config(site, tmp_path):
    result = mirror_cli("check-config", "--config", str(site))
    assert result.returncode == 0, result.stderr
    printed = tmp_path / "elsewhere" / "printed.toml"  # relative paths were made absolute
    printed.parent.mkdir()
    printed.write_text(result.stdout)
    loaded, reloaded = config.load(site), config.load(printed)
    assert dataclasses.replace(reloaded, source=loaded.source) == loaded


def test_check_config_shows_where_secrets_come_from_never_their_values(site, tmp_path):
    printed = mirror_cli("check-config", "--config", str(site)).stdout
    for secret in (HUB_TOKEN, HARBOR_PASSWORD, BIND_PASSWORD):
        assert secret not in printed
    assert 'password_env = "HUB_TOKEN"  # password: ***' in printed
    assert f'password_file = "{tmp_path / "harbor.pass"}"  # password: ***' in printed
    assert f'bind_password_file = "{tmp_path / "bind.pass"}"  # bind_password: ***' in printed


def test_check_config_prints_every_table_and_key_defaults_included(site):
    printed = tomllib.loads(mirror_cli("check-config").stdout)
    defaults = tomllib.loads(config.default_config_text())
    for table, keys in defaults.items():
        assert set(keys) <= set(printed[table]), table
    assert printed["upstreams"]["dockerhub"]["mode"] == "online"
    site_printed = tomllib.loads(mirror_cli("check-config", "--config", str(site)).stdout)
    assert site_printed["auth"]["ldap"]["group_attribute"] == "gid"
    assert site_printed["upstreams"]["site.reg"]["rules"][1] == {
        "repositories": ["public/*"],
        "access": "anonymous",
        "users": [],
        "groups": [],
    }
    assert site_printed["catalog"]["tls"] == "on"  # "auto" with a certificate: the effect


def test_check_config_names_every_problem_and_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[server]\nport = "x"\n[upstreams.a]\nurl = "ftp://a"\nprefix = "a.io"\n'
        'username = "u"\npassword_env = "HPC_MIRROR_TEST_UNSET"\n'
    )
    result = mirror_cli("check-config", "--config", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {bad}: server.port: must be int, got 'x'",
        f"error: {bad}: upstreams.a.url: must be http(s)://host[:port], got 'ftp://a'",
        f"error: {bad}: upstreams.a.password_env: environment variable "
        "'HPC_MIRROR_TEST_UNSET' is not set",
    ]


def test_version_is_the_package_version():
    result = mirror_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"hpc-mirror {__version__}\n")


PATH_TEXT = st.text(min_size=1).filter(lambda text: "\x00" not in text)


# No deadline: each example reads the embedded config file, which a loaded machine slows.
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(title=st.text(), root=PATH_TEXT, out=PATH_TEXT, name=st.text(min_size=1))
def test_any_strings_round_trip(tmp_path, title, root, out, name):
    loaded = config.load(
        None,
        {
            "cache": {"root": root},
            "catalog": {"title": title, "out": out},
            "upstreams": {name: {"url": "http://127.0.0.1:9", "prefix": "a.io"}},
        },
    )
    printed = tmp_path / "printed.toml"
    printed.write_text(to_toml(loaded))
    assert dataclasses.replace(config.load(printed), source=loaded.source) == loaded
