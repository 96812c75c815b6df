"""A tight push client for the benchmark: one keep-alive HTTP/1.1 connection to a registry
on loopback, request bodies sent with sendfile(2) from a file or from memory, and one Bearer
token per repository fetched before the timed part (the same client for both servers)."""

from __future__ import annotations

import http.client
import re
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

import requests

from benchmarks.harness import BenchError
from tests.support.processes import LOOPBACK

USER_AGENT = "hpc-mirror-bench-push"


@dataclass(frozen=True)
class FileRegion:
    """`count` bytes of an open file from `offset`: a request body sent with sendfile."""

    file: BinaryIO
    offset: int
    count: int


Body = bytes | FileRegion | None


class PushClient:
    """Requests to one registry as `user`: `authorize(repo)` once per repository (untimed),
    then `request()` sends with that repository's token."""

    def __init__(self, port: int, user: str, password: str, timeout: float = 600.0) -> None:
        self.port = port
        self.credentials = (user, password)
        self.timeout = timeout
        self.token = ""
        self._conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)

    def close(self) -> None:
        self._conn.close()

    def authorize(self, repo: str) -> None:
        """Answer the registry's challenge for a push to `repo` with a token for it."""
        self.token = ""
        status, fields, _ = self.request("HEAD", f"/v2/{repo}/blobs/sha256:{'0' * 64}")
        if status != 401:
            raise BenchError(f"expected a challenge for {repo}, got {status}")
        challenge = fields.get("www-authenticate", "")
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if not challenge.lower().startswith("bearer ") or "realm" not in params:
            raise BenchError(f"not a Bearer challenge: {challenge!r}")
        response = requests.get(
            params["realm"],
            params={"service": params.get("service", ""), "scope": f"repository:{repo}:pull,push"},
            auth=self.credentials,
            timeout=60,
        )
        if response.status_code != 200:
            raise BenchError(f"token request for {repo}: {response.status_code}")
        body = response.json()
        self.token = body.get("token") or body["access_token"]

    def request(
        self, method: str, path: str, body: Body = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lower-case names) and body of one request on the connection."""
        conn = self._conn
        conn.putrequest(method, path, skip_accept_encoding=True)
        fields = {"User-Agent": USER_AGENT, **(headers or {})}
        if self.token:
            fields["Authorization"] = f"Bearer {self.token}"
        length = len(body) if isinstance(body, bytes) else body.count if body else 0
        if method in ("PUT", "PATCH", "POST"):
            fields["Content-Length"] = str(length)
        for key, value in fields.items():
            conn.putheader(key, value)
        conn.endheaders()
        if isinstance(body, bytes):
            conn.sock.sendall(body)
        elif isinstance(body, FileRegion):
            sent = conn.sock.sendfile(body.file, body.offset, body.count)
            if sent != body.count:
                raise BenchError(f"sent {sent} of {body.count} bytes: the file is shorter")
        response = conn.getresponse()
        data = response.read()
        if response.will_close:
            conn.close()  # http.client reconnects on the next request
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def expect(
        self, status: int, method: str, path: str, body: Body = None, **headers: str
    ) -> dict[str, str]:
        """The response headers of a request that must answer `status`."""
        got, fields, data = self.request(method, path, body, _header_names(headers))
        if got != status:
            raise BenchError(f"{method} {path}: {got} (wanted {status}): {data[:300]!r}")
        return fields

    def location(self, fields: dict[str, str]) -> str:
        """The path (and query) of a Location header, absolute or not."""
        url = urlsplit(fields["location"])
        return url.path + (f"?{url.query}" if url.query else "")


def _header_names(headers: dict[str, str]) -> dict[str, str]:
    """`content_range=...` keyword arguments as HTTP header names (`Content-Range`)."""
    return {"-".join(part.capitalize() for part in k.split("_")): v for k, v in headers.items()}


def with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"
