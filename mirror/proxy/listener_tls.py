"""TLS on the mirror's own listener: TLS 1.2+ with OpenSSL's and Python's default server
ciphers, and a certificate that SIGHUP swaps for new handshakes without touching open
connections."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from cryptography import x509

from mirror.config import ServerConfig

log = logging.getLogger(__name__)


class ListenerTLS:
    """The listener's SSL context. Every handshake is switched (in the ClientHello's
    server-name callback, which OpenSSL runs with or without SNI) to the context of the
    certificate loaded last, so a reload is one assignment: a certificate that fails to
    load never replaces the one in use, and established connections keep theirs."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self._cert_file = cert_file
        self._key_file = key_file
        self._current = _certificate_context(cert_file, key_file)
        self.context = _certificate_context(cert_file, key_file)
        self.context.sni_callback = self._present_current
        log.info("serving TLS 1.2+ with %s", describe_certificate(cert_file))

    @classmethod
    def from_config(cls, server: ServerConfig) -> ListenerTLS | None:
        """The listener's TLS, or None when `[server] tls_cert` is not set."""
        if server.tls_cert is None or server.tls_key is None:
            return None
        return cls(server.tls_cert, server.tls_key)

    def _present_current(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object
    ) -> None:
        if connection.context is not self._current:
            connection.context = self._current

    def reload(self) -> str | None:
        """Load the certificate and key again (SIGHUP) and describe it; on failure keep
        presenting the certificate loaded before, say why, and return None."""
        try:
            description = describe_certificate(self._cert_file)
            fresh = _certificate_context(self._cert_file, self._key_file)
        except (OSError, ValueError) as exc:
            log.error(
                "TLS certificate not reloaded, still presenting the previous one: %s",
                self._failure(exc),
            )
            return None
        self._current = fresh
        return description

    def _failure(self, exc: OSError | ValueError) -> str:
        if isinstance(exc, ssl.SSLError):
            return (
                f"{self._cert_file} and {self._key_file} are not a PEM certificate chain "
                f"and its private key ({exc.reason or exc})"
            )
        if isinstance(exc, OSError):
            where = exc.filename or f"{self._cert_file} or {self._key_file}"
            return f"cannot read {where}: {exc.strerror}"
        return f"{self._cert_file} holds no PEM certificate"


def _certificate_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Client-initiated renegotiation only costs the server handshakes (TLS 1.2).
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert_file, key_file)
    return context


def describe_certificate(cert_file: Path) -> str:
    """The leaf certificate of a PEM chain as one log phrase: file, subject, serial, expiry."""
    leaf = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return (
        f"{cert_file} (subject {leaf.subject.rfc4514_string()}, serial {leaf.serial_number:x}, "
        f"expires {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC)"
    )
