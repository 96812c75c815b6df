"""The access policy as a site writes it in config.toml: per upstream, then per rule."""

import pytest

from mirror import config
from mirror.access.identity import ANONYMOUS, Identity
from mirror.access.policy import AccessPolicy
from mirror.errors import ConfigError
from mirror.reference import Repository

SITE = """
[auth]
htpasswd = "{htpasswd}"
groups_file = "{groups}"

[upstreams.hub]
url = "https://hub.example"
prefix = "hub.example"

[upstreams.vendor]
url = "https://vendor.example"
prefix = "vendor.example"
access = "authenticated"

[[upstreams.vendor.rules]]
repositories = ["org/licensed-*", "org/secret"]
access = "restricted"
groups = ["licensed"]
users = ["alice"]

[[upstreams.vendor.rules]]
repositories = ["org/*"]
access = "anonymous"
"""


@pytest.fixture
def policy(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(htpasswd=tmp_path / "htpasswd", groups=tmp_path / "groups"))
    return AccessPolicy(config.load(site).upstreams)


BOB = Identity("bob")
CAROL_LICENSED = Identity("carol", frozenset({"licensed"}))


@pytest.mark.parametrize(
    ("identity", "repo", "allowed"),
    [
        (ANONYMOUS, Repository("hub.example", "library/alpine"), True),
        (ANONYMOUS, Repository("vendor.example", "tools/x"), False),
        (BOB, Repository("vendor.example", "tools/x"), True),
        # the first matching rule wins: org/licensed-a is restricted, not anonymous
        (ANONYMOUS, Repository("vendor.example", "org/licensed-a"), False),
        (BOB, Repository("vendor.example", "org/licensed-a"), False),
        (CAROL_LICENSED, Repository("vendor.example", "org/licensed-a"), True),
        (Identity("alice"), Repository("vendor.example", "org/secret"), True),
        (ANONYMOUS, Repository("vendor.example", "org/open"), True),
        # patterns match the whole path, case-sensitively
        (ANONYMOUS, Repository("vendor.example", "org/secret/sub"), True),
        (BOB, Repository("vendor.example", "ORG/secret"), True),
        (ANONYMOUS, Repository("unknown.example", "x"), False),
    ],
)
def test_first_matching_rule_decides(policy, identity, repo, allowed):
    assert policy.may_pull(identity, repo) is allowed


def test_public_means_anonymous(policy):
    assert policy.protects_anything
    assert policy.is_public(Repository("hub.example", "a"))
    assert not policy.is_public(Repository("vendor.example", "org/licensed-x"))
    assert AccessPolicy(config.load().upstreams).protects_anything is False


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        ('access = "authenticated"', 'upstreams.u.access: "authenticated" needs a way to log in'),
        ('access = "everyone"', "upstreams.u.access: must be one of"),
        ('access = "restricted"', 'upstreams.u: access = "restricted" needs users or groups'),
        ('users = ["a"]', "upstreams.u: users and groups apply only to"),
        (
            '[[upstreams.u.rules]]\naccess = "anonymous"',
            "upstreams.u.rules[0].repositories: missing",
        ),
        ('[[upstreams.u.rules]]\nrepositories = ["x"]\nfoo = 1', "upstreams.u.rules[0].foo"),
    ],
)
def test_a_policy_nobody_could_satisfy_is_an_error(tmp_path, snippet, problem):
    site = tmp_path / "site.toml"
    site.write_text(f'[upstreams.u]\nurl = "https://u.example"\nprefix = "u.example"\n{snippet}\n')
    with pytest.raises(ConfigError) as caught:
        config.load(site)
    assert problem in str(caught.value)


def test_groups_need_a_group_source(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(
        f'[auth]\nhtpasswd = "{tmp_path}/h"\n'
        '[upstreams.u]\nurl = "https://u.example"\nprefix = "u.example"\n'
        'access = "restricted"\ngroups = ["g"]\n'
    )
    with pytest.raises(ConfigError, match="upstreams.u.groups: no group source"):
        config.load(site)


@pytest.mark.parametrize(
    ("ldap", "problem"),
    [
        ('url = "http://x"', "auth.ldap.url: must be ldap://"),
        ('url = "ldap://x"', "auth.ldap: set user_dn_template, or search_base"),
        (
            'url = "ldaps://x"\nstart_tls = true\nuser_dn_template = "uid={user}"',
            "auth.ldap.start_tls: ldaps:// is TLS already",
        ),
        ('url = "ldap://x"\nuser_dn_template = "uid=bob"', "must contain {user}"),
        (
            'url = "ldap://x"\nuser_dn_template = "uid={user}"\ngroup_base = "ou=g"',
            "group_base and group_filter go together",
        ),
        ('url = "ldap://x"\nuser_dn_template = "uid={user}"\nbind_password = "s"', "unknown key"),
    ],
)
def test_ldap_section_errors_name_the_key(tmp_path, ldap, problem):
    site = tmp_path / "site.toml"
    site.write_text(f"[auth.ldap]\n{ldap}\n")
    with pytest.raises(ConfigError) as caught:
        config.load(site)
    assert problem in str(caught.value)


def test_ldap_section_parsed(tmp_path, monkeypatch):
    monkeypatch.setenv("LDAP_BIND_SECRET", "s3cret")
    site = tmp_path / "site.toml"
    site.write_text(
        '[auth.ldap]\nurl = "ldap://127.0.0.1:3890"\nstart_tls = true\n'
        'search_base = "ou=people,dc=x"\nsearch_filter = "(uid={user})"\n'
        'bind_dn = "cn=reader,dc=x"\nbind_password_env = "LDAP_BIND_SECRET"\n'
    )
    ldap = config.load(site).auth.ldap
    assert ldap is not None and ldap.start_tls and ldap.bind_password == "s3cret"
    assert "s3cret" not in repr(ldap)
    assert config.load(site).auth.enabled


def test_tls_needs_cert_and_key_that_match(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(f'[server]\ntls_cert = "{tmp_path}/absent.pem"\n')
    with pytest.raises(ConfigError, match="set both or neither"):
        config.load(site)
    site.write_text(f'[server]\ntls_cert = "{tmp_path}/c.pem"\ntls_key = "{tmp_path}/k.pem"\n')
    with pytest.raises(ConfigError, match="server.tls_cert, server.tls_key: cannot read"):
        config.load(site)
