"""The access log: one line per request, as text or JSON, on standard output or in a file
that SIGHUP reopens (logrotate moves the file, then sends SIGHUP).

A line never holds a credential: no header is logged, and of the query string only `ns`
(the upstream containerd names) and the pagination keys `n` and `last` are kept, so a
token or signature in a query (a client that sends its token as `?access_token=`) stays
out. Each line is one `write` to a descriptor opened with O_APPEND: the workers of one
node share the file without interleaving, and nothing waits in a buffer to be lost at
exit. The write happens on the event loop; to a local file that is a copy into the page
cache (microseconds), which is why the log belongs on a local disk, not the cluster one.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from mirror.config import LogConfig
from mirror.errors import InvalidValue
from mirror.metrics import series
from mirror.proxy.served import SERVED, Served
from mirror.proxy.throttled_log import ThrottledWarning

log = logging.getLogger(__name__)

_KEPT_QUERY_KEYS = ("ns", "n", "last")
_MAX_PATH = 1000  # characters of the path logged; a longer one ends in "..."
# Bytes a line's fields may hold as they are: anything else (spaces, quotes, controls,
# non-ASCII) is percent-encoded, so one field is one token and one line is one line.
_UNSAFE = re.compile(r"[^\x21\x23-\x5b\x5d-\x7e]")
_STDOUT = 1


class AccessLog:
    """Where access lines go: standard output or a file, in one of two formats."""

    def __init__(self, config: LogConfig) -> None:
        self.path = config.access_file
        self._json = config.format == "json"
        self._fd = _STDOUT if self.path is None else _open(self.path)
        self._failed = ThrottledWarning(log)
        self._pid = os.getpid()  # in JSON: which worker of `--workers N` served

    @classmethod
    def from_config(cls, config: LogConfig) -> AccessLog | None:
        """The access log of `config`, or None when it is off; `InvalidValue` when its file
        cannot be opened (one line at start, not a traceback)."""
        if not config.access:
            return None
        try:
            return cls(config)
        except OSError as exc:
            raise InvalidValue(
                f"log.access: cannot open {config.access_file}: {exc.strerror}"
            ) from None

    def reopen(self) -> bool:
        """Open the file again under its name (SIGHUP, after logrotate moved it); on
        failure (logged) the file open before goes on being written. Standard output is
        left as it is."""
        if self.path is None:
            return True
        try:
            fresh = _open(self.path)
        except OSError as exc:
            log.error(
                "access log not reopened, still writing to the previous file: cannot open %s: %s",
                self.path,
                exc.strerror,
            )
            return False
        stale, self._fd = self._fd, fresh
        os.close(stale)
        return True

    def close(self) -> None:
        if self._fd != _STDOUT:
            os.close(self._fd)
            self._fd = -1

    def write(self, request: web.BaseRequest, status: int, body_bytes: int, seconds: float) -> None:
        """Log one request that ended `seconds` after it started."""
        record = request.get(SERVED) or Served()
        if not record.logged:
            return
        fields = {
            "time": _rfc3339(time.time() - seconds),
            "client": request.remote or None,
            "user": record.user,
            "method": request.method,
            "path": loggable_path(request),
            "status": status,
            "bytes": body_bytes,
            "duration": round(seconds, 3),
            "cache": _CACHE_WORDS.get(record.cache or "", record.cache),
            "upstream": record.upstream,
        }
        line = json.dumps({**fields, "pid": self._pid}) if self._json else _text_line(fields)
        self._write((line + "\n").encode())

    def write_cut(self, request: web.BaseRequest, seconds: float) -> None:
        """Log a response the shutdown cut (aiohttp's access logger never sees it): with
        the status its headers went out with and the bytes sent until then. One that sent
        nothing yet is left out."""
        record = request.get(SERVED)
        if record is not None and record.status is not None:
            self.write(request, record.status, record.body_bytes or 0, seconds)

    def _write(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            self._failed("access log: cannot write to %s: %s", self.path or "stdout", exc.strerror)


# Where a response came from, in the access log's documented words (hit, miss-leader,
# miss-follower, stale, revalidated, pass-through), which sites grep and parse; /metrics
# keeps its own label values.
_CACHE_WORDS = {
    series.FILL_LEADER: "miss-leader",
    series.FILL_FOLLOWER: "miss-follower",
    series.PASS_THROUGH: "pass-through",
}


def _open(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


def _text_line(fields: dict[str, object]) -> str:
    """`time client user "METHOD path" status bytes seconds cache upstream`, "-" for none."""
    return (
        f"{fields['time']} {_token(fields['client'])} {_token(fields['user'])} "
        f'"{fields["method"]} {fields["path"]}" {fields["status"]} {fields["bytes"]} '
        f"{fields['duration']:.3f} {_token(fields['cache'])} {_token(fields['upstream'])}"
    )


def _token(value: object) -> str:
    return "-" if value is None else _UNSAFE.sub(_percent, str(value))


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode())


def _rfc3339(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def loggable_path(request: web.BaseRequest) -> str:
    """The path as the client sent it, with only the query keys that cannot be secrets."""
    path = request.rel_url.raw_path
    if len(path) > _MAX_PATH:
        path = path[:_MAX_PATH] + "..."
    path = _UNSAFE.sub(_percent, path)
    kept = [(key, value) for key, value in request.query.items() if key in _KEPT_QUERY_KEYS]
    return f"{path}?{urlencode(kept)}" if kept else path


def logger_class(access_log: AccessLog) -> type[AbstractAccessLogger]:
    """What aiohttp calls once each response is finished (its `access_log_class`)."""

    class _Logger(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            access_log.write(request, response.status, _body_bytes(request, response), time)

    return _Logger


def _body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """Body bytes sent: as a handler counted them (blobs), else the response's length;
    for a push, the body bytes received."""
    record = request.get(SERVED)
    if record is not None and record.received_bytes is not None:
        return record.received_bytes
    if record is not None and record.body_bytes is not None:
        return record.body_bytes
    if request.method == "HEAD" or response.status in (204, 304) or response.status < 200:
        return 0
    return response.content_length or 0
