"""A minimal Docker-style token server, so the real registry can run with Bearer auth.

distribution's token auth (``auth.token``) sends clients a ``WWW-Authenticate: Bearer
realm=…,service=…,scope=…`` challenge; clients fetch a JWT from the realm and retry with
``Authorization: Bearer <jwt>``. This module plays the realm: it checks Basic
credentials, signs a JWT with a throw-away EC P-256 key, and records what it issued so
proxy tests can assert that tokens are cached and reused.

The registry trusts the key through a self-signed certificate written to
``rootcertbundle``. The JWT header carries that certificate in ``x5c``; distribution 2.8
verifies the chain against the bundle and takes the signing key from the leaf. (A ``kid``
equal to the libtrust fingerprint of the key is also accepted; see
:func:`libtrust_key_id`.)
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .processes import LOOPBACK, LoopbackServer, free_port

KeyHint = Literal["x5c", "kid"]


@dataclass(frozen=True)
class TokenSettings:
    """What the registry's ``auth.token`` section needs to trust a :class:`TokenIssuer`."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass(frozen=True)
class SigningIdentity:
    """A private key and the self-signed certificate that vouches for it."""

    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def generate(cls, common_name: str = "hpc-mirror test token issuer") -> "SigningIdentity":
        """Create a fresh EC P-256 key and a one-day self-signed certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def certificate_der_b64(self) -> str:
        """The certificate as standard base64 DER, the form ``x5c`` entries use."""
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return base64.b64encode(der).decode("ascii")


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The docker/libtrust key ID: base32 of the first 240 bits of sha256(PKIX DER),
    unpadded, in colon-separated groups of four characters."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii")
    encoded = encoded.rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def parse_scope(scope: str) -> dict | None:
    """Turn ``repository:<name>:pull,push`` into a JWT ``access`` entry.

    The name may itself contain ``:`` (a host with a port), so split at the first and the
    last colon. Returns ``None`` for a malformed scope.
    """
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep and sep2 and kind and name):
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


class TokenIssuer(LoopbackServer):
    """Token endpoint ``GET /token?service=…&scope=…`` on a free 127.0.0.1 port.

    Requests must carry Basic ``username``/``password``; otherwise the answer is 401
    (unless ``allow_anonymous``, which hands out tokens limited to ``pull``). Runs a
    ``ThreadingHTTPServer`` in a daemon thread; call :meth:`start` and :meth:`stop`, or
    use it as a context manager.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        service: str = "hpc-mirror-test-registry",
        issuer: str = "hpc-mirror-test-issuer",
        workdir: str | Path,
        key_hint: KeyHint = "x5c",
        token_lifetime: int = 300,
        allow_anonymous: bool = False,
    ) -> None:
        self.username = username
        self.password = password
        self.service = service
        self.issuer = issuer
        self.key_hint = key_hint
        self.token_lifetime = token_lifetime
        self.allow_anonymous = allow_anonymous
        self.identity = SigningIdentity.generate()
        self.cert_path = Path(workdir) / "token-issuer-cert.pem"
        self.cert_path.write_bytes(self.identity.certificate_pem())
        self.port = free_port()
        self._lock = threading.Lock()
        self._issued = 0
        self._scopes: list[str] = []
        self._rejected = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- addresses and settings -----------------------------------------------------------

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    @property
    def settings(self) -> TokenSettings:
        """Pass as ``RegistryProcess(auth=("token", issuer.settings))``."""
        return TokenSettings(self.realm, self.service, self.issuer, self.cert_path)

    # --- statistics -----------------------------------------------------------------------

    @property
    def issued_count(self) -> int:
        """How many tokens were handed out."""
        with self._lock:
            return self._issued

    @property
    def rejected_count(self) -> int:
        """How many token requests were answered 401."""
        with self._lock:
            return self._rejected

    @property
    def scopes(self) -> list[str]:
        """Every scope string requested so far (successful requests), in order."""
        with self._lock:
            return list(self._scopes)

    # --- tokens ---------------------------------------------------------------------------

    def make_token(self, subject: str, access: list[dict], *, lifetime: int | None = None) -> str:
        """Sign a JWT with the claims distribution's token spec requires."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,  # a plain string: distribution 2.8 rejects a list here
            "exp": now + (self.token_lifetime if lifetime is None else lifetime),
            "nbf": now,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        headers: dict[str, Any]
        if self.key_hint == "x5c":
            headers = {"x5c": [self.identity.certificate_der_b64()]}
        else:
            headers = {"kid": libtrust_key_id(self.identity.private_key.public_key())}
        return jwt.encode(claims, self.identity.private_key, algorithm="ES256", headers=headers)

    def _authenticate(self, authorization: str | None) -> str | None:
        """The user name for valid Basic credentials, ``""`` for allowed anonymous access,
        ``None`` when the request must be refused."""
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode("utf-8")
            except ValueError:
                return None
            user, _, password = decoded.partition(":")
            ok = secrets.compare_digest(user, self.username) and secrets.compare_digest(
                password, self.password
            )
            return user if ok else None
        return "" if self.allow_anonymous else None

    def handle_token_request(self, path: str, authorization: str | None) -> tuple[int, dict]:
        """Answer one token request: ``(status, json body)``. Public for direct testing."""
        url = urlsplit(path)
        if url.path != "/token":
            return 404, {"error": "not found"}
        subject = self._authenticate(authorization)
        if subject is None:
            with self._lock:
                self._rejected += 1
            return 401, {"error": "authentication required"}
        query = parse_qs(url.query)
        requested = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        access = [entry for entry in map(parse_scope, requested) if entry is not None]
        if subject == "":
            for entry in access:
                entry["actions"] = [a for a in entry["actions"] if a == "pull"]
        token = self.make_token(subject or "anonymous", access)
        with self._lock:
            self._issued += 1
            self._scopes.extend(requested)
        issued_at = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
        return 200, {
            "token": token,
            "access_token": token,
            "expires_in": self.token_lifetime,
            "issued_at": issued_at,
        }

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> "TokenIssuer":
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer((LOOPBACK, self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="token-issuer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "TokenIssuer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _handler_for(issuer: TokenIssuer) -> type[BaseHTTPRequestHandler]:
    """A request-handler class bound to ``issuer`` (http.server wants a class)."""

    class TokenHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            status, body = issuer.handle_token_request(self.path, self.headers.get("Authorization"))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="hpc-mirror-token"')
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            """Silence the default per-request stderr logging."""

    return TokenHandler
