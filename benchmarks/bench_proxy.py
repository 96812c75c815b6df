#!/usr/bin/env python3
"""End-to-end benchmark of hpc-mirror against real peers, all on 127.0.0.1.

What runs (every process is a child of this script, stopped by its own PID at the end):

* upstream: Debian's ``docker-registry`` (CNCF distribution 2.8) with temp storage, seeded
  over its HTTP API with a large and a medium random blob and one OCI manifest for each;
* hpc-mirror (``python -m mirror.cli serve --log-level warning``) in front of it, started
  again with a fresh cache root whenever a measurement needs an empty cache;
* nginx (``sendfile on``) serving the proxy's own cache directory, as the ceiling for a
  warm blob GET;
* distribution in proxy mode (a second ``docker-registry`` with ``proxy.remoteurl`` = the
  upstream and its own storage) as the baseline pull-through cache: for manifest
  requests/s, and (informational) for the cold blob GET;
* ``wrk`` for manifest requests/s; blob downloads use a small raw-socket HTTP/1.1 reader
  (``recv_into`` a 4 MiB buffer, bytes discarded or sha256-hashed), or ``curl``.

Measurements: warm 1 GiB blob GET (proxy vs nginx on the same file), cold 1 GiB GET
(proxy with an empty cache vs the upstream directly, and vs distribution's proxy mode),
32 concurrent cold clients of one 256 MiB blob (wall time, per-client MiB/s, upstream blob
GETs from the upstream's access log, sha256 of every body), and manifest requests/s by tag
and by digest (proxy vs distribution's proxy mode). Around every measurement the CPU
seconds of each server and of the client are read from /proc, because on a small machine
the processes compete for the same cores. ``--quick`` shrinks sizes to 256 MiB / 64 MiB
and wrk to 3 s. See benchmarks/README.md.

Usage::

    .venv/bin/python benchmarks/bench_proxy.py [--quick] [--json PATH] [--workdir DIR]
                                               [--cache-dir DIR] [--client socket|curl]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from benchmarks import watchdog  # noqa: E402
from benchmarks.watchdog import Timeout  # noqa: E402
from tests.support.registry import RegistryProcess, free_port  # noqa: E402

LOOPBACK = "127.0.0.1"
MIB = 1024 * 1024
PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")
NGINX = "/usr/sbin/nginx"
WRK = "/usr/bin/wrk"
CURL = "/usr/bin/curl"
USER_AGENT = "hpc-mirror-bench"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
PREFIX = "bench.local"
BIG_REPO = "bench/big"
MID_REPO = "bench/mid"
TAG = "latest"
CONCURRENT_CLIENTS = 32
REPETITIONS = 3
RECV_BUFFER = 4 * MIB


class BenchError(RuntimeError):
    """A measurement could not be taken (a server failed, a response was wrong)."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------

def stop_process(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM this one process, SIGKILL after `timeout`, and reap it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def http_status(port: int, path: str, headers: dict[str, str] | None = None,
                method: str = "GET", timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, headers={"User-Agent": USER_AGENT, **(headers or {})})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def wait_http(port: int, path: str, process: subprocess.Popen, what: str, log_path: Path,
              ok: tuple[int, ...] = (200,), timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{what} exited with {process.returncode}:\n{tail(log_path)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_status(port, path, timeout=1.0)[0] in ok:
                return
        time.sleep(0.05)
    raise BenchError(f"{what} did not answer {path} on port {port} within {timeout} s:\n"
                     f"{tail(log_path)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _with_blob_descriptor_cache(cfg: dict) -> dict:
    # Debian's shipped /etc/docker/registry/config.yml enables this cache; use it too.
    cfg["storage"]["cache"] = {"blobdescriptor": "inmemory"}
    return cfg


class UpstreamRegistry(RegistryProcess):
    """The upstream: access log on (the benchmark counts requests from it), error-level
    structured log, in-memory blob descriptor cache as in Debian's default config."""

    def config(self) -> dict:
        return _with_blob_descriptor_cache(super().config())


class BaselineRegistry(RegistryProcess):
    """distribution's own pull-through cache as the baseline: no access log, error-level
    logging and the in-memory blob descriptor cache, so it pays for no per-request logging
    the proxy (run with --log-level warning) does not do either."""

    def config(self) -> dict:
        cfg = _with_blob_descriptor_cache(super().config())
        cfg["log"]["level"] = "error"
        cfg["log"]["accesslog"] = {"disabled": True}
        return cfg


class ProxyProcess:
    """One hpc-mirror process with its own config, cache root and index dir."""

    def __init__(self, workdir: Path, upstream_url: str, tag_ttl: int = 300) -> None:
        self.workdir = workdir
        self.cache_root = workdir / "cache"
        self.index_dir = workdir / "index"
        self.config_path = workdir / "config.toml"
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"
        self.upstream_url = upstream_url
        self.tag_ttl = tag_ttl
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def blob_path(self, hex_digest: str) -> Path:
        return self.cache_root / "blobs" / "sha256" / hex_digest[:2] / hex_digest

    def start(self) -> "ProxyProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self.port = free_port()
            self.config_path.write_text(
                "[server]\n"
                f'host = "{LOOPBACK}"\n'
                f"port = {self.port}\n"
                "[cache]\n"
                f'root = "{self.cache_root}"\n'
                f'index_dir = "{self.index_dir}"\n'
                f"tag_ttl_seconds = {self.tag_ttl}\n"
                "[upstreams.bench]\n"
                f'url = "{self.upstream_url}"\n'
                f'prefix = "{PREFIX}"\n'
                "default = true\n")
            with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
                self.process = subprocess.Popen(
                    [PYTHON, "-m", "mirror.cli", "serve", "--config", str(self.config_path),
                     "--log-level", "warning"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.workdir)
            try:
                wait_http(self.port, "/v2/", self.process, "hpc-mirror", self.stderr_path)
                return self
            except BenchError:
                self.stop()
                if attempt < 2 and "address already in use" in tail(self.stderr_path).lower():
                    continue
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process)

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class NginxProcess:
    """nginx in the foreground serving one directory with sendfile. `master_process off`
    makes the one process that serves the PID we started, so its CPU time can be read.
    `sendfile on; tcp_nopush on;` as in Debian's default nginx.conf: with TCP_CORK and
    nginx's 2 MiB sendfile_max_chunk some GETs run 2-3x faster at a third of the CPU."""

    def __init__(self, workdir: Path, root: Path) -> None:
        self.workdir = workdir
        self.root = root
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.error_log = workdir / "error.log"

    def start(self) -> "NginxProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / name).mkdir(exist_ok=True)
        for attempt in range(3):
            self.port = free_port()
            w = self.workdir
            conf = w / "nginx.conf"
            conf.write_text(f"""
master_process off;
worker_processes 1;
pid {w}/nginx.pid;
error_log {self.error_log} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    server {{
        listen {LOOPBACK}:{self.port};
        root {self.root};
    }}
}}
""")
            with open(w / "stderr.log", "ab") as err:
                self.process = subprocess.Popen(
                    [NGINX, "-p", str(w), "-e", str(self.error_log), "-c", str(conf),
                     "-g", "daemon off;"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            try:
                wait_http(self.port, "/", self.process, "nginx", self.error_log,
                          ok=(200, 403, 404))
                return self
            except BenchError:
                self.stop()
                if attempt < 2 and "in use" in tail(self.error_log):
                    continue
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process)


# ---------------------------------------------------------------------------------------
# CPU accounting
# ---------------------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int | None) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads, from /proc."""
    if pid is None:
        return (0.0, 0.0)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return (0.0, 0.0)
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS


def own_cpu() -> tuple[float, float]:
    """(user, system) CPU seconds of this process plus its reaped children (curl, wrk)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + kids.ru_utime, me.ru_stime + kids.ru_stime


class CpuMeter:
    """CPU seconds used by named processes (and by the client, i.e. this script and the
    children it reaped) between `start` and `stop`."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self._before: dict[str, tuple[float, float]] = {}
        self.used: dict[str, tuple[float, float]] = {}

    def _sample(self) -> dict[str, tuple[float, float]]:
        sample = {name: proc_cpu(pid) for name, pid in self.pids.items()}
        sample["client"] = own_cpu()
        return sample

    def __enter__(self) -> "CpuMeter":
        self._before = self._sample()
        return self

    def __exit__(self, *exc_info: object) -> None:
        after = self._sample()
        self.used = {name: (after[name][0] - before[0], after[name][1] - before[1])
                     for name, before in self._before.items()}

    def total(self, name: str) -> float:
        user, system = self.used.get(name, (0.0, 0.0))
        return user + system

    def describe(self) -> str:
        return ", ".join(f"{name} {u:.2f} user + {s:.2f} sys"
                         for name, (u, s) in self.used.items())


# ---------------------------------------------------------------------------------------
# Seeding the upstream
# ---------------------------------------------------------------------------------------

def random_stream() -> Callable[[int], bytes]:
    """A source of random bytes: AES-CTR keystream when `cryptography` is importable
    (about 20x faster than os.urandom here), else os.urandom."""
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        return os.urandom
    encryptor = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
    return lambda count: encryptor.update(bytes(count))


def random_file(path: Path, size: int) -> str:
    """Write `size` random bytes to `path`, hashing while writing; return the hex digest."""
    digest = hashlib.sha256()
    source = random_stream()
    with open(path, "wb") as out:
        left = size
        while left:
            data = source(min(8 * MIB, left))
            digest.update(data)
            out.write(data)
            left -= len(data)
    return digest.hexdigest()


def push_blob(port: int, repo: str, source: Path | bytes, hex_digest: str) -> None:
    """Monolithic upload: POST an upload session, PUT the whole body with ?digest=."""
    status, headers, body = http_status(port, f"/v2/{repo}/blobs/uploads/", method="POST")
    if status != 202 or "location" not in headers:
        raise BenchError(f"upload start for {repo} answered {status}: {body[:200]!r}")
    location = headers["location"]
    if location.startswith("http"):
        location = "/" + location.split("/", 3)[3]
    separator = "&" if "?" in location else "?"
    url = f"{location}{separator}digest=sha256:{hex_digest}"
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=300, blocksize=4 * MIB)
    try:
        with contextlib.ExitStack() as files:
            if isinstance(source, bytes):
                size, stream = len(source), source
            else:
                size, stream = source.stat().st_size, files.enter_context(open(source, "rb"))
            conn.request("PUT", url, body=stream, headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(size),
                "User-Agent": USER_AGENT})
            response = conn.getresponse()
            reply = response.read()
    finally:
        conn.close()
    if response.status != 201:
        raise BenchError(f"blob PUT for {repo} answered {response.status}: {reply[:200]!r}")


def push_image(port: int, repo: str, layer_path: Path, layer_hex: str,
               layer_size: int) -> str:
    """Push a config blob, the layer and an OCI manifest tagged TAG; return its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_hex}"]}},
                        sort_keys=True).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    push_blob(port, repo, config, config_hex)
    push_blob(port, repo, layer_path, layer_hex)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": f"sha256:{config_hex}",
                   "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": f"sha256:{layer_hex}",
                    "size": layer_size}],
    }, indent=2).encode()
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        conn.request("PUT", f"/v2/{repo}/manifests/{TAG}", body=manifest,
                     headers={"Content-Type": OCI_MANIFEST, "User-Agent": USER_AGENT})
        response = conn.getresponse()
        reply = response.read()
    finally:
        conn.close()
    if response.status != 201:
        raise BenchError(f"manifest PUT for {repo} answered {response.status}: {reply[:200]!r}")
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


# ---------------------------------------------------------------------------------------
# Download clients
# ---------------------------------------------------------------------------------------

@dataclass
class Fetch:
    status: int
    size: int
    seconds: float
    sha256: str | None = None
    error: str | None = None
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def mib_s(self) -> float:
        return self.size / MIB / self.seconds if self.seconds > 0 else 0.0


def socket_get(port: int, path: str, *, hash_body: bool = False,
               headers: dict[str, str] | None = None, timeout: float = 120.0) -> Fetch:
    """HTTP/1.1 GET over a raw socket; the body is read with recv_into a 4 MiB buffer and
    discarded (or hashed). Time runs from sending the request to the last body byte."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
               f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n")
    for key, value in (headers or {}).items():
        request += f"{key}: {value}\r\n"
    request += "\r\n"
    digest = hashlib.sha256() if hash_body else None
    view = memoryview(bytearray(RECV_BUFFER))
    received = 0
    status = 0
    start = time.perf_counter()
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(request.encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    raise BenchError("connection closed before the response headers")
                head += chunk
            header_block, _, rest = head.partition(b"\r\n\r\n")
            lines = header_block.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "chunked" in fields.get("transfer-encoding", "").lower():
                raise BenchError("chunked response: this reader only handles Content-Length")
            length = int(fields["content-length"]) if "content-length" in fields else None
            received = len(rest)
            if digest is not None:
                digest.update(rest)
            while length is None or received < length:
                count = sock.recv_into(view)
                if count == 0:
                    break
                received += count
                if digest is not None:
                    digest.update(view[:count])
            elapsed = time.perf_counter() - start
            if length is not None and received != length:
                return Fetch(status, received, elapsed, None,
                             f"connection closed after {received} of {length} bytes")
    except (OSError, BenchError, ValueError, KeyError, IndexError) as exc:
        return Fetch(status, received, time.perf_counter() - start, None,
                     f"{type(exc).__name__}: {exc}")
    return Fetch(status, received, elapsed, digest.hexdigest() if digest else None)


def curl_get(port: int, path: str, *, timeout: float = 120.0) -> Fetch:
    """curl -o /dev/null; curl's own size and total time."""
    url = f"http://{LOOPBACK}:{port}{path}"
    try:
        result = subprocess.run(
            [CURL, "-s", "-o", "/dev/null", "--max-time", str(int(timeout)), "-A", USER_AGENT,
             "-w", "%{http_code} %{size_download} %{time_total}", url],
            capture_output=True, text=True, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        return Fetch(0, 0, timeout, None, "curl timed out")
    parts = result.stdout.split()
    if result.returncode != 0 or len(parts) != 3:
        return Fetch(0, 0, 0.0, None, f"curl exited {result.returncode}: {result.stderr[:200]}")
    return Fetch(int(parts[0]), int(float(parts[1])), float(parts[2]))


def get_blob(client: str, port: int, path: str, expected_size: int, what: str,
             pids: dict[str, int | None] | None = None) -> Fetch:
    """Download a blob, discarding it; raise unless it is a complete 200. With `pids`,
    record the CPU seconds those processes (and the client) used meanwhile."""
    with CpuMeter(pids or {}) as meter:
        fetch = (curl_get if client == "curl" else socket_get)(port, path)
    fetch.cpu = meter.used
    if fetch.error or fetch.status != 200 or fetch.size != expected_size:
        raise BenchError(f"{what}: GET {path} -> status {fetch.status}, {fetch.size} of "
                         f"{expected_size} bytes, error {fetch.error}")
    return fetch


# ---------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------

@dataclass
class WrkResult:
    requests_per_second: float
    requests: int
    non_2xx: int
    socket_errors: str
    latency_avg: str
    raw: str


def run_wrk(port: int, path: str, seconds: int, accept: str) -> WrkResult:
    url = f"http://{LOOPBACK}:{port}{path}"
    command = [WRK, "-t2", "-c32", f"-d{seconds}s", "--timeout", "5s",
               "-H", f"Accept: {accept}", url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    out = result.stdout
    if result.returncode != 0:
        raise BenchError(f"wrk exited {result.returncode}: {result.stderr}{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:([^\n]*)", out)
    latency = re.search(r"Latency\s+(\S+)", out)
    if not rps or not total:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    return WrkResult(float(rps.group(1)), int(total.group(1)),
                     int(non2xx.group(1)) if non2xx else 0,
                     errors.group(1).strip() if errors else "",
                     latency.group(1) if latency else "?", out)


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------

@dataclass
class Metric:
    name: str
    value: float | None
    unit: str
    peer: float | None = None
    peer_name: str = ""
    target: str = ""
    check: str = ""  # "ratio>=X", "value>=X", "value==X"; empty: informational
    notes: str = ""
    ratio: float | None = None
    verdict: str = "info"

    def judge(self) -> "Metric":
        if self.value is not None and self.peer:
            self.ratio = self.value / self.peer
        if not self.check:
            self.verdict = "info"
            return self
        operator = "==" if "==" in self.check else ">="
        kind, _, bound_text = self.check.partition(operator)
        bound = float(bound_text)
        subject = self.ratio if kind == "ratio" else self.value
        if subject is None:
            self.verdict = "MISS"
        elif operator == "==":
            self.verdict = "PASS" if subject == bound else "MISS"
        else:
            self.verdict = "PASS" if subject >= bound else "MISS"
        return self


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_results(metrics: list[Metric]) -> None:
    print()
    print("RESULTS")
    header = (f"{'metric':<38} {'value':>10} {'unit':<8} {'peer':>10} {'ratio':>6}  "
              f"{'target':<16} {'verdict':<7} peer")
    print(header)
    print("-" * (len(header) + 20))
    for m in metrics:
        digits = 0 if m.unit in ("GETs", "failures", "req/s") else (2 if m.unit == "s" else 1)
        ratio = f"{m.ratio:.2f}" if m.ratio is not None else "-"
        print(f"{m.name:<38} {fmt(m.value, digits):>10} {m.unit:<8} {fmt(m.peer, digits):>10} "
              f"{ratio:>6}  {m.target or '-':<16} {m.verdict:<7} {m.peer_name or '-'}"
              + (f"  [{m.notes}]" if m.notes else ""))
    print()


# ---------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------

@dataclass
class Image:
    repo: str
    layer_hex: str
    layer_size: int
    manifest_digest: str


def speeds(fetches: list[Fetch]) -> tuple[float, float]:
    values = [f.mib_s for f in fetches]
    return max(values), statistics.median(values)


def cpu_per_gib(fetches: list[Fetch]) -> dict[str, float]:
    """Median CPU seconds per GiB moved, per process name."""
    names = {name for f in fetches for name in f.cpu}
    return {name: statistics.median(sum(f.cpu.get(name, (0.0, 0.0))) / (f.size / (1 << 30))
                                    for f in fetches)
            for name in sorted(names)}


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, stack: contextlib.ExitStack):
        self.args = args
        self.workdir = workdir
        self.cache_parent = Path(tempfile.mkdtemp(prefix="caches-", dir=args.cache_dir)) \
            if args.cache_dir else workdir
        self.stack = stack
        self.client = args.client
        self.reps = args.reps
        self.big_size = (256 if args.quick else 1024) * MIB
        self.mid_size = (64 if args.quick else 256) * MIB
        self.wrk_seconds = 3 if args.quick else 10
        self.metrics: list[Metric] = []
        self.details: dict[str, Any] = {}
        self.cpu_lines: list[str] = []
        self.proxy_issues: list[str] = []
        self._count = 0
        self.upstream: UpstreamRegistry | None = None
        self.big: Image | None = None
        self.mid: Image | None = None

    # -- helpers -----------------------------------------------------------------------
    def _next(self, kind: str) -> Path:
        self._count += 1
        return self.cache_parent / f"{kind}-{self._count}"

    def new_proxy(self) -> ProxyProcess:
        assert self.upstream is not None
        proxy = ProxyProcess(self._next("proxy"), self.upstream.url)
        self.stack.callback(proxy.stop)
        proxy.start()
        log(f"hpc-mirror pid {proxy.pid} on port {proxy.port} (cache {proxy.cache_root})")
        return proxy

    def retire_proxy(self, proxy: ProxyProcess, remove_cache: bool = True) -> None:
        proxy.stop()
        self.collect_proxy_issues(proxy)
        if remove_cache:
            shutil.rmtree(proxy.workdir / "cache", ignore_errors=True)
            shutil.rmtree(proxy.workdir / "index", ignore_errors=True)

    def new_baseline(self) -> BaselineRegistry:
        assert self.upstream is not None
        peer = BaselineRegistry(workdir=self._next("distproxy"),
                                proxy_remote_url=self.upstream.url)
        self.stack.callback(peer.stop)
        peer.start()
        return peer

    def retire_baseline(self, peer: BaselineRegistry) -> None:
        peer.stop()
        shutil.rmtree(peer.storage_dir, ignore_errors=True)

    def collect_proxy_issues(self, proxy: ProxyProcess) -> None:
        lines = [line for line in proxy.stderr_text().splitlines()
                 if line.strip() and not line.startswith("hpc-mirror serving")]
        if lines:
            self.proxy_issues.append(f"--- stderr of {proxy.workdir.name} ({len(lines)} lines, "
                                     "last 60) ---\n" + "\n".join(lines[-60:]))

    def proxy_blob_path(self, image: Image) -> str:
        return f"/v2/{PREFIX}/{image.repo}/blobs/sha256:{image.layer_hex}"

    def proxy_manifest_path(self, image: Image, reference: str) -> str:
        return f"/v2/{PREFIX}/{image.repo}/manifests/{reference}"

    @staticmethod
    def plain_blob_path(image: Image) -> str:
        return f"/v2/{image.repo}/blobs/sha256:{image.layer_hex}"

    @staticmethod
    def plain_manifest_path(image: Image, reference: str) -> str:
        return f"/v2/{image.repo}/manifests/{reference}"

    def fetch_manifest(self, port: int, path: str, what: str) -> bytes:
        status, _, body = http_status(port, path, {"Accept": OCI_MANIFEST}, timeout=30)
        if status != 200:
            raise BenchError(f"{what}: GET {path} answered {status}: {body[:300]!r}")
        return body

    # -- phases ------------------------------------------------------------------------
    def ceilings(self) -> None:
        """What this machine allows: one core of sha256, and writing the big blob's size
        (write + fsync) to the filesystem that holds the proxy caches."""
        data = random_stream()(8 * MIB)
        digest = hashlib.sha256()
        started = time.perf_counter()
        for _ in range(64):
            digest.update(data)
        sha_speed = 512 / (time.perf_counter() - started)
        target = self.cache_parent / "write-ceiling.bin"
        write_speeds = []
        for _ in range(2):  # best of two: this VM's disk speed swings a lot
            started = time.perf_counter()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                left = self.big_size
                while left:
                    left -= os.write(fd, data[:min(len(data), left)])
                os.fsync(fd)
            finally:
                os.close(fd)
                target.unlink()
            write_speeds.append(self.big_size / MIB / (time.perf_counter() - started))
        write_speed = max(write_speeds)
        log(f"machine: sha256 {sha_speed:,.0f} MiB/s on one core; write+fsync of "
            f"{self.big_size // MIB} MiB to {self.cache_parent}: "
            + ", ".join(f"{speed:,.0f}" for speed in write_speeds) + " MiB/s")
        self.metrics += [
            Metric("ceiling_sha256_one_core", sha_speed, "MiB/s",
                   notes="hashlib, 8 MiB updates"),
            Metric(f"ceiling_cache_fs_write_fsync_{self.big_size // MIB}M", write_speed,
                   "MiB/s", notes=f"best of 2, new file in {self.cache_parent}"),
        ]

    def seed(self) -> None:
        self.upstream = UpstreamRegistry(workdir=self.workdir / "upstream", log_level="error")
        self.stack.callback(self.upstream.stop)
        self.upstream.start()
        log(f"upstream docker-registry pid {self.upstream.pid} on {self.upstream.url}")
        images = []
        for repo, size in ((BIG_REPO, self.big_size), (MID_REPO, self.mid_size)):
            source = self.workdir / f"seed-{size // MIB}MiB.bin"
            started = time.perf_counter()
            layer_hex = random_file(source, size)
            generated = time.perf_counter()
            digest = push_image(self.upstream.port, repo, source, layer_hex, size)
            source.unlink()
            log(f"seeded {repo}:{TAG}: layer {size // MIB} MiB sha256:{layer_hex[:12]}... "
                f"(random+hash+write {generated - started:.1f} s, push "
                f"{time.perf_counter() - generated:.1f} s), manifest {digest[:19]}...")
            images.append(Image(repo, layer_hex, size, digest))
        self.big, self.mid = images

    def cold_and_warm(self) -> None:
        assert self.upstream and self.big
        image = self.big
        label = f"{image.layer_size // MIB}M"
        upstream = self.upstream
        # Read the upstream's copy once so every variant starts from the page cache.
        get_blob(self.client, upstream.port, self.plain_blob_path(image), image.layer_size,
                 "upstream warm-up")

        cold_proxy: list[Fetch] = []
        cold_direct: list[Fetch] = []
        cold_dist: list[Fetch] = []
        upstream_gets: list[int] = []
        proxy: ProxyProcess | None = None
        for rep in range(self.reps):
            if proxy is not None:
                self.retire_proxy(proxy)
            proxy = self.new_proxy()
            # A real pull reads the manifest first; that links the layer to the repository
            # so the timed blob GET is the fill itself.
            self.fetch_manifest(proxy.port, self.proxy_manifest_path(image, TAG),
                                "cold manifest")
            mark = upstream.mark()
            fetch = get_blob(self.client, proxy.port, self.proxy_blob_path(image),
                             image.layer_size, "cold proxy GET",
                             {"proxy": proxy.pid, "upstream": upstream.pid})
            upstream_gets.append(upstream.count("GET", image.layer_hex, since=mark))
            cold_proxy.append(fetch)

            direct = get_blob(self.client, upstream.port, self.plain_blob_path(image),
                              image.layer_size, "direct upstream GET",
                              {"upstream": upstream.pid})
            cold_direct.append(direct)

            dist = self.new_baseline()
            try:
                self.fetch_manifest(dist.port, self.plain_manifest_path(image, TAG),
                                    "distribution proxy cold manifest")
                dist_fetch = get_blob(self.client, dist.port, self.plain_blob_path(image),
                                      image.layer_size, "distribution proxy cold GET",
                                      {"distproxy": dist.pid, "upstream": upstream.pid})
            finally:
                self.retire_baseline(dist)
            cold_dist.append(dist_fetch)
            log(f"cold {label} rep {rep + 1}: proxy {fetch.mib_s:,.0f} MiB/s "
                f"({fetch.seconds:.2f} s, upstream blob GETs {upstream_gets[-1]}); upstream "
                f"direct {direct.mib_s:,.0f} MiB/s; distribution proxy {dist_fetch.mib_s:,.0f} "
                f"MiB/s")
            log(f"    CPU s/GiB: proxy path [{_cpu_text(fetch)}]; direct [{_cpu_text(direct)}];"
                f" distribution [{_cpu_text(dist_fetch)}]")

        # Warm: the last proxy keeps its cache; nginx serves the very same directory.
        assert proxy is not None
        cached = proxy.blob_path(image.layer_hex)
        if not cached.exists():
            raise BenchError(f"the proxy did not leave {cached} after a complete GET")
        nginx = NginxProcess(self.workdir / "nginx", proxy.cache_root / "blobs" / "sha256")
        self.stack.callback(nginx.stop)
        nginx.start()
        nginx_pid = nginx.process.pid if nginx.process else None
        log(f"nginx pid {nginx_pid} on port {nginx.port} serving {nginx.root}")
        nginx_path = f"/{image.layer_hex[:2]}/{image.layer_hex}"
        mark = upstream.mark()
        warm_proxy: list[Fetch] = []
        warm_nginx: list[Fetch] = []
        get_blob(self.client, proxy.port, self.proxy_blob_path(image), image.layer_size,
                 "warm-up proxy GET")
        get_blob(self.client, nginx.port, nginx_path, image.layer_size, "warm-up nginx GET")
        for rep in range(self.reps):
            # Alternate who goes first so drift in the machine's speed hits both alike.
            order = ["proxy", "nginx"] if rep % 2 == 0 else ["nginx", "proxy"]
            for who in order:
                if who == "proxy":
                    warm_proxy.append(get_blob(self.client, proxy.port,
                                               self.proxy_blob_path(image), image.layer_size,
                                               "warm proxy GET", {"proxy": proxy.pid}))
                else:
                    warm_nginx.append(get_blob(self.client, nginx.port, nginx_path,
                                               image.layer_size, "nginx GET",
                                               {"nginx": nginx_pid}))
            log(f"warm {label} rep {rep + 1}: proxy {warm_proxy[-1].mib_s:,.0f} MiB/s "
                f"[{_cpu_text(warm_proxy[-1])}], nginx {warm_nginx[-1].mib_s:,.0f} MiB/s "
                f"[{_cpu_text(warm_nginx[-1])}]")
        warm_upstream = upstream.count(since=mark)
        if warm_upstream:
            self.proxy_issues.append(f"warm blob GETs caused {warm_upstream} upstream "
                                     "requests (expected 0)")
        nginx.stop()
        self.retire_proxy(proxy)

        wp_best, wp_med = speeds(warm_proxy)
        wn_best, wn_med = speeds(warm_nginx)
        cp_best, cp_med = speeds(cold_proxy)
        cd_best, cd_med = speeds(cold_direct)
        dist_best, dist_med = speeds(cold_dist)
        extra_gets = [g for g in upstream_gets if g != 1]
        self.metrics += [
            Metric(f"warm_blob_{label}_best", wp_best, "MiB/s", wn_best, "nginx sendfile",
                   "ratio >= 0.9", "ratio>=0.9"),
            Metric(f"warm_blob_{label}_median", wp_med, "MiB/s", wn_med, "nginx sendfile",
                   "ratio >= 0.9", "ratio>=0.9"),
            Metric(f"cold_blob_{label}_best", cp_best, "MiB/s", cd_best, "upstream direct",
                   ">= 1000 MiB/s", "value>=1000"),
            Metric(f"cold_blob_{label}_median", cp_med, "MiB/s", cd_med, "upstream direct",
                   ">= 1000 MiB/s", "value>=1000",
                   notes=f"upstream GETs per cold GET {upstream_gets}" if extra_gets else ""),
            Metric(f"cold_blob_{label}_best_vs_distproxy", cp_best, "MiB/s", dist_best,
                   "distribution proxy, cold"),
            Metric(f"cold_blob_{label}_median_vs_distproxy", cp_med, "MiB/s", dist_med,
                   "distribution proxy, cold"),
        ]
        for name, fetches in (("cold via proxy", cold_proxy), ("cold upstream direct",
                                                              cold_direct),
                              ("cold via distribution proxy", cold_dist),
                              ("warm via proxy", warm_proxy), ("warm via nginx", warm_nginx)):
            per = cpu_per_gib(fetches)
            self.cpu_lines.append(f"{name:<28} " + ", ".join(f"{k} {v:.2f}"
                                                            for k, v in per.items()))
        self.details["warm"] = {"proxy": [asdict(f) for f in warm_proxy],
                                "nginx": [asdict(f) for f in warm_nginx]}
        self.details["cold"] = {"proxy": [asdict(f) for f in cold_proxy],
                                "upstream_direct": [asdict(f) for f in cold_direct],
                                "distribution_proxy": [asdict(f) for f in cold_dist],
                                "upstream_blob_gets_per_proxy_get": upstream_gets}

    def concurrent_cold(self) -> ProxyProcess:
        """32 clients at once on an empty cache, each: manifest by tag, then the layer,
        hashed. Returns the (now warm) proxy for the manifest benchmark."""
        assert self.upstream and self.mid
        image = self.mid
        proxy = self.new_proxy()
        mark = self.upstream.mark()
        barrier = threading.Barrier(CONCURRENT_CLIENTS + 1)
        results: list[Fetch | None] = [None] * CONCURRENT_CLIENTS
        finished: list[float] = [0.0] * CONCURRENT_CLIENTS
        manifest_path = self.proxy_manifest_path(image, TAG)
        blob_path = self.proxy_blob_path(image)

        def client(index: int) -> None:
            try:
                barrier.wait(timeout=30)
                status, _, body = http_status(proxy.port, manifest_path,
                                              {"Accept": OCI_MANIFEST}, timeout=60)
                if status != 200:
                    results[index] = Fetch(status, 0, 0.0, None, f"manifest answered {status}"
                                           f": {body[:200]!r}")
                    return
                results[index] = socket_get(proxy.port, blob_path, hash_body=True,
                                            timeout=180)
            except Exception as exc:  # reported below, never lost
                results[index] = Fetch(0, 0, 0.0, None, f"{type(exc).__name__}: {exc}")
            finally:
                finished[index] = time.perf_counter()

        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(CONCURRENT_CLIENTS)]
        for thread in threads:
            thread.start()
        with CpuMeter({"proxy": proxy.pid, "upstream": self.upstream.pid}) as meter:
            barrier.wait(timeout=30)
            started = time.perf_counter()
            deadline = started + 240
            for thread in threads:
                thread.join(timeout=max(0.1, deadline - time.perf_counter()))
        hung = sum(1 for thread in threads if thread.is_alive())
        wall = (max(finished) if not hung else time.perf_counter()) - started

        failures = []
        for index, fetch in enumerate(results):
            if fetch is None:
                failures.append(f"client {index}: did not finish")
            elif fetch.error or fetch.status != 200:
                failures.append(f"client {index}: status {fetch.status}, {fetch.size} bytes, "
                                f"{fetch.error}")
            elif fetch.size != image.layer_size:
                failures.append(f"client {index}: {fetch.size} of {image.layer_size} bytes")
            elif fetch.sha256 != image.layer_hex:
                failures.append(f"client {index}: sha256 {fetch.sha256} != {image.layer_hex}")
        requests = self.upstream.requests()[mark:]
        blob_gets = sum(1 for r in requests if r.method == "GET" and image.layer_hex in r.path)
        blob_heads = sum(1 for r in requests if r.method == "HEAD" and "/blobs/" in r.path)
        manifest_requests = sum(1 for r in requests if "/manifests/" in r.path)
        good = [f for f in results if f is not None and not f.error and f.status == 200]
        per_client = [f.mib_s for f in good]
        moved_gib = len(good) * image.layer_size / (1 << 30)
        log(f"{CONCURRENT_CLIENTS} concurrent cold clients of {image.layer_size // MIB} MiB: "
            f"wall {wall:.2f} s, per-client median "
            f"{statistics.median(per_client) if per_client else 0:,.0f} MiB/s, upstream: "
            f"{blob_gets} blob GETs, {blob_heads} blob HEADs, {manifest_requests} manifest "
            f"requests; failures {len(failures)}, hung {hung}")
        log(f"    CPU s: {meter.describe()} (client includes sha256 of every body)")
        if moved_gib:
            self.cpu_lines.append(
                f"{'32 concurrent, per GiB served':<28} "
                + ", ".join(f"{name} {meter.total(name) / moved_gib:.2f}"
                            for name in meter.used))
        if failures:
            banner = "!" * 78
            print(f"{banner}\nINTEGRITY FAILURES in the {CONCURRENT_CLIENTS}-client test:\n"
                  + "\n".join(failures) + f"\n{banner}", flush=True)
            self.proxy_issues.append("concurrent clients failed:\n" + "\n".join(failures))
        label = f"{CONCURRENT_CLIENTS}x{image.layer_size // MIB}M"
        aggregate = len(good) * image.layer_size / MIB / wall if wall > 0 else None
        self.metrics += [
            Metric(f"concurrent{label}_upstream_blob_GETs", blob_gets, "GETs",
                   target="== 1", check="value==1",
                   notes=f"{blob_heads} HEADs, {manifest_requests} manifest reqs"),
            Metric(f"concurrent{label}_integrity_failures", len(failures), "failures",
                   target="== 0", check="value==0"),
            Metric(f"concurrent{label}_wall", wall, "s"),
            Metric(f"concurrent{label}_client_median",
                   statistics.median(per_client) if per_client else None, "MiB/s"),
            Metric(f"concurrent{label}_client_min",
                   min(per_client) if per_client else None, "MiB/s"),
            Metric(f"concurrent{label}_aggregate", aggregate, "MiB/s"),
        ]
        self.details["concurrent"] = {
            "clients": [asdict(f) if f else None for f in results],
            "wall_seconds": wall, "upstream_blob_gets": blob_gets,
            "upstream_blob_heads": blob_heads, "upstream_manifest_requests": manifest_requests,
            "cpu_seconds": meter.used, "failures": failures}
        return proxy

    def manifests(self, proxy: ProxyProcess) -> None:
        assert self.upstream and self.mid
        image = self.mid
        upstream = self.upstream
        peer = self.new_baseline()
        log(f"distribution proxy-mode peer pid {peer.pid} on {peer.url}")
        targets = {
            "proxy": (proxy.port, proxy.pid, {
                "tag": self.proxy_manifest_path(image, TAG),
                "digest": self.proxy_manifest_path(image, image.manifest_digest)}),
            "distproxy": (peer.port, peer.pid, {
                "tag": self.plain_manifest_path(image, TAG),
                "digest": self.plain_manifest_path(image, image.manifest_digest)}),
        }
        # Warm both (the proxy holds the manifest since the concurrent test) and check
        # sample responses before trusting wrk.
        for who, (port, _, paths) in targets.items():
            for kind, path in paths.items():
                for _ in range(2):
                    body = self.fetch_manifest(port, path, f"{who} manifest by {kind}")
                if "sha256:" + hashlib.sha256(body).hexdigest() != image.manifest_digest:
                    raise BenchError(f"{who} by {kind}: manifest body does not match digest")
        results: dict[tuple[str, str], WrkResult] = {}
        for kind in ("tag", "digest"):
            for who in ("proxy", "distproxy"):
                port, pid, paths = targets[who]
                mark = upstream.mark()
                with CpuMeter({who: pid, "upstream": upstream.pid}) as meter:
                    result = run_wrk(port, paths[kind], self.wrk_seconds, OCI_MANIFEST)
                upstream_requests = upstream.count(since=mark)
                results[(who, kind)] = result
                status = http_status(port, paths[kind], {"Accept": OCI_MANIFEST})[0]
                log(f"manifest by {kind} via {who}: {result.requests_per_second:,.0f} req/s "
                    f"(latency avg {result.latency_avg}, {result.requests} requests, non-2xx "
                    f"{result.non_2xx}, socket errors '{result.socket_errors or 'none'}', "
                    f"upstream requests during run {upstream_requests}, status after: "
                    f"{status})")
                if result.requests:
                    per_request = ", ".join(
                        f"{name} {meter.total(name) / result.requests * 1e6:.0f}"
                        for name in meter.used)
                    self.cpu_lines.append(f"{'manifest by ' + kind + ' via ' + who:<28} "
                                          f"CPU us/request: {per_request}")
                self.details[f"wrk_{who}_{kind}"] = {**asdict(result),
                                                     "upstream_requests": upstream_requests,
                                                     "cpu_seconds": meter.used}
                if result.non_2xx or result.socket_errors or status != 200:
                    self.proxy_issues.append(
                        f"wrk {who} by {kind}: non-2xx {result.non_2xx}, socket errors "
                        f"{result.socket_errors or 'none'}, status after the run {status}")
        for kind, bound in (("tag", 4.0), ("digest", 2.0)):
            mine, theirs = results[("proxy", kind)], results[("distproxy", kind)]
            notes = []
            if mine.non_2xx or theirs.non_2xx:
                notes.append(f"non-2xx proxy {mine.non_2xx} / peer {theirs.non_2xx}")
            self.metrics.append(Metric(
                f"manifest_by_{kind}_rps", mine.requests_per_second, "req/s",
                theirs.requests_per_second, "distribution proxy mode",
                f"ratio >= {bound:g}", f"ratio>={bound}", "; ".join(notes)))
        stderr_lines = len(proxy.stderr_text().splitlines())
        self.details["proxy_stderr_lines_after_wrk"] = stderr_lines
        if stderr_lines > 50:
            self.proxy_issues.append(f"the proxy wrote {stderr_lines} stderr lines by the end "
                                     "of the manifest benchmark (per-request logging?)")
        self.retire_baseline(peer)
        self.retire_proxy(proxy)

    def run(self) -> list[Metric]:
        self.ceilings()
        self.seed()
        self.cold_and_warm()
        proxy = self.concurrent_cold()
        self.manifests(proxy)
        return [m.judge() for m in self.metrics]


def _cpu_text(fetch: Fetch) -> str:
    gib = fetch.size / (1 << 30) or 1.0
    return ", ".join(f"{name} {sum(used) / gib:.2f}" for name, used in fetch.cpu.items())


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="256 MiB / 64 MiB blobs and 3 s wrk runs (smoke test)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--workdir", type=Path, metavar="DIR",
                        help="parent of the run's temp dir (default: the system temp dir, "
                             "/tmp); needs about 4 GiB free for a full run")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="parent for the proxies' caches and the distribution peers' "
                             "storage (default: inside the run's temp dir); e.g. /dev/shm "
                             "to take the disk out of the cold measurements")
    parser.add_argument("--client", choices=("socket", "curl"), default="socket",
                        help="blob download client for the warm/cold tests (default socket)")
    parser.add_argument("--reps", type=int, default=REPETITIONS,
                        help=f"repetitions of each blob GET (default {REPETITIONS})")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (logs, caches) for inspection")
    parser.add_argument("--timeout", type=float, default=540.0,
                        help="abort the whole run after this many seconds (default 540)")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def check_tools() -> None:
    missing = [path for path in (PYTHON, NGINX, WRK, CURL, "/usr/bin/docker-registry")
               if not os.access(path, os.X_OK)]
    if missing:
        raise SystemExit(f"missing executables: {', '.join(missing)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools()
    parent = args.workdir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="hpc-mirror-bench-", dir=parent))

    watchdog.install(args.timeout)

    cores = os.cpu_count() or 0
    print(f"hpc-mirror benchmark ({'quick' if args.quick else 'full'}) on {platform.node()}: "
          f"{cores} CPU cores, Python {platform.python_version()}, client {args.client}, "
          f"workdir {workdir}")
    print(f"NOTE: the load generators (wrk, the download clients) and every server share "
          f"these {cores} cores, so absolute numbers are lower bounds and the ratios compare "
          "servers under the same handicap. All content is in the page cache: 'cold' means "
          "an empty proxy cache, not a cold disk.", flush=True)
    started = time.perf_counter()
    metrics: list[Metric] = []
    error: str | None = None
    bench: Bench | None = None
    try:
        with contextlib.ExitStack() as stack:
            bench = Bench(args, workdir, stack)
            metrics = bench.run()
    except (BenchError, Timeout, KeyboardInterrupt, OSError, subprocess.SubprocessError,
            threading.BrokenBarrierError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        print(f"\nBENCHMARK ABORTED: {error}", file=sys.stderr, flush=True)
        if bench is not None:
            metrics = [m.judge() for m in bench.metrics]
    finally:
        signal.alarm(0)
        if bench is not None:
            # Every process is stopped by now (ExitStack); read what the proxies left.
            for proxy_dir in sorted(bench.cache_parent.glob("proxy-*")):
                if any(f"stderr of {proxy_dir.name} " in issue for issue in bench.proxy_issues):
                    continue
                proxy = ProxyProcess(proxy_dir, "")
                bench.collect_proxy_issues(proxy)
            if bench.cache_parent != workdir and not args.keep:
                shutil.rmtree(bench.cache_parent, ignore_errors=True)
        if args.keep:
            print(f"kept {workdir}" + (f" and {bench.cache_parent}" if bench and
                                       bench.cache_parent != workdir else ""))
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.perf_counter() - started
    if bench is not None and bench.cpu_lines:
        print("\nCPU seconds per GiB moved (median of reps; user+system, all threads):")
        for line in bench.cpu_lines:
            print("  " + line)
    if bench is not None and bench.proxy_issues:
        print("\nPROXY ISSUES / PROXY LOG OUTPUT:")
        for issue in bench.proxy_issues:
            print(issue)
    print_results(metrics)
    print(f"({cores} CPU cores shared by clients and servers; run took {elapsed:.0f} s"
          f"{'; --quick sizes' if args.quick else ''})")
    if args.json:
        payload = {
            "mode": "quick" if args.quick else "full", "cores": cores, "client": args.client,
            "seconds": elapsed, "error": error,
            "metrics": [asdict(m) for m in metrics],
            "cpu": bench.cpu_lines if bench else [],
            "details": bench.details if bench else {},
            "proxy_issues": bench.proxy_issues if bench else [],
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    if error:
        return 2
    return 0 if all(m.verdict != "MISS" for m in metrics) else 1


if __name__ == "__main__":
    sys.exit(main())
