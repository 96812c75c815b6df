"""Run Debian's OpenLDAP ``slapd`` as a real site directory for tests.

Each :class:`SlapdProcess` owns a directory holding a ``slapd.conf`` (read with ``-f``), an
mdb database loaded with ``slapadd`` before the first start, and slapd's log. It listens on
two free 127.0.0.1 ports: ``ldap://`` (StartTLS offered) and ``ldaps://``, both with a
certificate from :class:`~tests.support.tls.LoopbackCA`.

The directory (:data:`SUFFIX`) holds the people in :data:`USERS` under ``ou=people``, the
read-only service account :data:`READER` under ``ou=services``, and under ``ou=groups``
both kinds of group sites use: ``posixGroup`` naming members by ``memberUid`` and
``groupOfNames`` naming them by ``member`` DN. People are readable anonymously (so a search
needs no account); groups only by a bound user; passwords by nobody (an account may change
its own).
"""

from __future__ import annotations

import base64
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import ldap3
from ldap3.core.exceptions import LDAPException

from .processes import LOOPBACK, ServerProcess, StartError, free_port, spawn_logged
from .tls import LoopbackCA, make_loopback_ca

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SLAPPASSWD = "/usr/sbin/slappasswd"
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")

SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"


@dataclass(frozen=True)
class Account:
    """An entry that can bind: its name (the `uid`, or the `cn` of a service), its DN
    exactly as written in the directory (RFC 4514 escapes) and its password."""

    name: str
    dn: str
    password: str


def _person(name: str, rdn_value: str) -> Account:
    return Account(name, f"uid={rdn_value},{PEOPLE}", f"{name[:5]}-Pw-{len(name)}x7Qe")


ALICE = _person("alice", "alice")
BOB = _person("bob", "bob")
CAROL = _person("carol", "carol")  # in no group
# Every character that means something in a DN or a filter: a leading '#', ',', '+', '\',
# '(', ')', '*' and spaces. The DN is escaped by hand here so that the code under test
# cannot agree with itself.
ODD = _person("#dev (ops)*, jr+1\\x", r"\#dev (ops)*\, jr\+1\\x")
USERS = (ALICE, BOB, CAROL, ODD)
READER = Account("reader", f"cn=reader,ou=services,{SUFFIX}", "reader-Pw-6x7Qe")

# posixGroup: members by uid. groupOfNames: members by DN.
POSIX_GROUPS = {"hpc": (ALICE, ODD), "licensed": (BOB,)}
NAMED_GROUPS = {"admins": (ALICE,), "chemists": (BOB, ODD)}


def groups_of(account: Account) -> frozenset[str]:
    """Every group (of both kinds) the account is a member of."""
    every = {**POSIX_GROUPS, **NAMED_GROUPS}
    return frozenset(name for name, members in every.items() if account in members)


class SlapdStartError(StartError):
    """slapd exited or did not answer an LDAP bind in time."""


class SlapdProcess(ServerProcess):
    """A ``slapd`` child process on 127.0.0.1 serving the test directory.

    ``workdir``: where config, database and log go (a test's ``tmp_path``). ``ca``: the
    CA whose 127.0.0.1 certificate slapd presents; one is made in the workdir if not given.
    """

    name = "slapd"
    start_error = SlapdStartError

    def __init__(
        self,
        workdir: str | Path,
        ca: LoopbackCA | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        super().__init__(start_timeout)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca = ca or make_loopback_ca(self.workdir / "tls")
        self.config_path = self.workdir / "slapd.conf"
        self.database_dir = self.workdir / "db"
        self.log_path = self.workdir / "slapd.log"
        self.port = free_port()
        self.tls_port = free_port()
        self._log_start = 0

    @property
    def url(self) -> str:
        """``ldap://127.0.0.1:PORT`` (StartTLS offered)."""
        return f"ldap://{LOOPBACK}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        """``ldaps://127.0.0.1:TLS_PORT``."""
        return f"ldaps://{LOOPBACK}:{self.tls_port}"

    # --- lifecycle ------------------------------------------------------------------------

    def _choose_ports(self) -> None:
        self.port = free_port()
        self.tls_port = free_port()

    def _spawn(self) -> subprocess.Popen[bytes]:
        if not self.database_dir.exists():
            self._load()
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        return spawn_logged(
            # -d keeps slapd in the foreground (its PID is the child's) and logs each
            # connection and operation ("stats") to stderr, here the log file.
            [SLAPD, "-f", str(self.config_path), "-h", f"{self.url}/ {self.ldaps_url}/"]
            + ["-d", "stats"],
            self.log_path,
            cwd=self.workdir,
        )

    def _answers(self) -> bool:
        server = ldap3.Server(LOOPBACK, port=self.port, connect_timeout=1, get_info=ldap3.NONE)
        connection = ldap3.Connection(server, receive_timeout=1, raise_exceptions=False)
        try:
            return bool(connection.bind())  # anonymous
        except LDAPException:
            return False
        finally:
            connection.unbind()

    def _failure_log(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")[-3000:]

    # --- the log --------------------------------------------------------------------------

    def mark(self) -> int:
        """A position in slapd's log; pass it as `since` to see only what came later."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def connections(self, since: int = 0) -> int:
        """How many connections slapd accepted (readiness probes included)."""
        return sum(" ACCEPT from " in line for line in self._log_lines(since))

    def operations(self, since: int = 0) -> list[str]:
        """The requests clients made, in order, as `BIND <dn>`, `SRCH <base>` or `EXT`
        (StartTLS); unbinds are left out (a client sends one without waiting)."""
        found = []
        for line in self._log_lines(since):
            match = _OPERATION.search(line)
            if match:
                found.append(" ".join(part for part in match.groups() if part))
        return found

    def _log_lines(self, since: int) -> list[str]:
        with open(self.log_path, "rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace").splitlines()

    # --- the directory --------------------------------------------------------------------

    def change_password(self, account: Account, new_password: str) -> None:
        """The account changes its own password (RFC 3062 Password Modify, as `ldappasswd`
        does); its old one stops working at once."""
        server = ldap3.Server(LOOPBACK, port=self.port, connect_timeout=5, get_info=ldap3.NONE)
        connection = ldap3.Connection(server, account.dn, account.password, raise_exceptions=True)
        try:
            connection.bind()
            # No old password: the bind proved it, and `=w` lets slapd write, not compare.
            changed = connection.extend.standard.modify_password(account.dn, None, new_password)
            assert changed, connection.result
        finally:
            connection.unbind()

    def _load(self) -> None:
        """Write slapd.conf and load the test directory into a new database."""
        self.database_dir.mkdir()
        self.config_path.write_text(self._config())
        ldif = self.workdir / "directory.ldif"
        ldif.write_text("\n".join(_ldif_entry(dn, attrs) for dn, attrs in _entries()))
        subprocess.run(
            [SLAPADD, "-q", "-f", str(self.config_path), "-l", str(ldif)],
            check=True,
            capture_output=True,
        )

    def _config(self) -> str:
        includes = "".join(f"include /etc/ldap/schema/{name}.schema\n" for name in SCHEMAS)
        return f"""{includes}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {self.workdir}/slapd.pid
argsfile {self.workdir}/slapd.args
TLSCertificateFile {self.ca.cert_file}
TLSCertificateKeyFile {self.ca.key_file}

database mdb
maxsize 16777216
suffix "{SUFFIX}"
directory {self.database_dir}
access to attrs=userPassword
    by self =w
    by anonymous auth
    by * none
access to dn.subtree="{GROUPS}"
    by users read
    by * none
access to *
    by * read
"""


def _entries() -> list[tuple[str, dict[str, list[str]]]]:
    entries: list[tuple[str, dict[str, list[str]]]] = [
        (
            SUFFIX,
            {"objectClass": ["dcObject", "organization"], "o": ["Example"], "dc": ["example"]},
        ),
    ]
    for unit in ("people", "services", "groups"):
        entries.append(
            (f"ou={unit},{SUFFIX}", {"objectClass": ["organizationalUnit"], "ou": [unit]})
        )
    for person in USERS:
        attrs = {"objectClass": ["inetOrgPerson"], "uid": [person.name], "cn": [person.name]}
        entries.append((person.dn, {**attrs, "sn": ["Test"], "userPassword": [_ssha(person)]}))
    service = {"objectClass": ["organizationalRole", "simpleSecurityObject"], "cn": [READER.name]}
    entries.append((READER.dn, {**service, "userPassword": [_ssha(READER)]}))
    for gid, (name, members) in enumerate(POSIX_GROUPS.items(), start=5000):
        attrs = {"objectClass": ["posixGroup"], "cn": [name], "gidNumber": [str(gid)]}
        entries.append((f"cn={name},{GROUPS}", {**attrs, "memberUid": [m.name for m in members]}))
    for name, members in NAMED_GROUPS.items():
        attrs = {"objectClass": ["groupOfNames"], "cn": [name], "member": [m.dn for m in members]}
        entries.append((f"cn={name},{GROUPS}", attrs))
    return entries


def _ssha(account: Account) -> str:
    return subprocess.run(
        [SLAPPASSWD, "-h", "{SSHA}", "-s", account.password],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


_OPERATION = re.compile(
    r" conn=\d+ op=\d+ (?:(BIND) dn=\"([^\"]*)\" method=|(SRCH) base=\"([^\"]*)\"|(EXT) )"
)
_LDIF_SAFE = re.compile(r"[A-Za-z0-9=,. -]*")


def _ldif_entry(dn: str, attrs: dict[str, list[str]]) -> str:
    lines = [_ldif_line("dn", dn)]
    lines += [_ldif_line(name, value) for name, values in attrs.items() for value in values]
    return "\n".join(lines) + "\n"


def _ldif_line(name: str, value: str) -> str:
    """`name: value`, or `name:: base64` for a value LDIF would read otherwise."""
    if _LDIF_SAFE.fullmatch(value) and not value.startswith(" "):
        return f"{name}: {value}"
    return f"{name}:: {base64.b64encode(value.encode()).decode()}"
