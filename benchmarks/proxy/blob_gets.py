"""Warm and cold GETs of the big layer.

Cold: each repetition starts a proxy with an empty cache, reads the manifest as a real pull
does, and times the blob GET (the fill itself); the same GET straight from the upstream and
through a fresh distribution proxy-mode registry are the peers. The proxy's CPU per GiB is
judged against sha256 alone on one core, measured right after each GET. Warm: the last cold
proxy keeps its cache and is timed against nginx serving the very same file."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from benchmarks.harness import GIB, MIB, BenchError, log
from benchmarks.proxy.clients import Fetch, get_blob, get_manifest
from benchmarks.proxy.cpu import sha256_cpu_per_gib
from benchmarks.proxy.report import Metric
from benchmarks.proxy.seed import TAG, Image
from benchmarks.proxy.servers import PREFIX, NginxProcess
from benchmarks.proxy.session import Session
from tests.support.proxy import ProxyProcess
from tests.support.tls import LoopbackCA


@dataclass
class Samples:
    """Every timed GET of one kind of run, by who served it."""

    by_server: dict[str, list[Fetch]] = field(default_factory=dict)
    upstream_gets: list[int] = field(default_factory=list)  # per cold proxy GET
    sha256_cpu: list[float] = field(default_factory=list)  # CPU-s/GiB, after each proxy GET

    def add(self, server: str, fetch: Fetch) -> None:
        self.by_server.setdefault(server, []).append(fetch)

    def speeds(self, server: str) -> tuple[float, float]:
        """Best and median MiB/s."""
        values = [f.mib_s for f in self.by_server[server]]
        return max(values), statistics.median(values)


def measure(session: Session) -> None:
    image = session.big
    # Read the upstream's copy once so every variant starts from the page cache.
    get_blob(
        session.client,
        session.upstream.port,
        image.blob_path(),
        image.layer_size,
        "upstream warm-up",
    )
    cold = Samples()
    proxy: ProxyProcess | None = None
    for rep in range(session.reps):
        if proxy is not None:
            session.retire_proxy(proxy)
        proxy = _cold_once(session, image, cold, rep)
    assert proxy is not None
    warm = _warm(session, image, proxy)
    session.retire_proxy(proxy)
    _record(session, image, cold, warm)


def _cold_once(session: Session, image: Image, cold: Samples, rep: int) -> ProxyProcess:
    """One cold GET through a new proxy, straight from the upstream, and through a new
    distribution proxy; returns the proxy, whose cache now holds the layer."""
    upstream = session.upstream
    proxy = session.new_proxy()
    # A real pull reads the manifest first; that links the layer to the repository so the
    # timed blob GET is the fill itself.
    get_manifest(proxy.port, image.manifest_path(TAG, PREFIX), "cold manifest")
    mark = upstream.mark()
    fetch = get_blob(
        session.client,
        proxy.port,
        image.blob_path(PREFIX),
        image.layer_size,
        "cold proxy GET",
        {"proxy": proxy.pid, "upstream": upstream.pid},
    )
    cold.upstream_gets.append(upstream.count("GET", image.layer_hex, since=mark))
    cold.add("proxy", fetch)
    cold.sha256_cpu.append(sha256_cpu_per_gib())

    direct = get_blob(
        session.client,
        upstream.port,
        image.blob_path(),
        image.layer_size,
        "direct upstream GET",
        {"upstream": upstream.pid},
    )
    cold.add("upstream", direct)

    dist = session.new_baseline()
    try:
        get_manifest(dist.port, image.manifest_path(TAG), "distribution proxy cold manifest")
        dist_fetch = get_blob(
            session.client,
            dist.port,
            image.blob_path(),
            image.layer_size,
            "distribution proxy cold GET",
            {"distproxy": dist.pid, "upstream": upstream.pid},
        )
    finally:
        session.retire_baseline(dist)
    cold.add("distproxy", dist_fetch)
    log(
        f"cold {image.layer_size // MIB}M rep {rep + 1}: proxy {fetch.mib_s:,.0f} MiB/s "
        f"({fetch.seconds:.2f} s, upstream blob GETs {cold.upstream_gets[-1]}); upstream "
        f"direct {direct.mib_s:,.0f} MiB/s; distribution proxy {dist_fetch.mib_s:,.0f} MiB/s"
    )
    log(
        f"    CPU s/GiB: proxy path [{fetch.cpu_text()}]; direct [{direct.cpu_text()}];"
        f" distribution [{dist_fetch.cpu_text()}]; {versus_sha256(fetch, cold.sha256_cpu[-1])}"
    )
    return proxy


def proxy_cpu_per_gib(fetch: Fetch) -> float:
    return sum(fetch.cpu["proxy"]) / (fetch.size / GIB)


def versus_sha256(fetch: Fetch, sha256_cpu: float) -> str:
    """The proxy's CPU per GiB of one GET against sha256 alone, for a progress line."""
    proxy = proxy_cpu_per_gib(fetch)
    return f"sha256 alone {sha256_cpu:.2f}: proxy = {proxy / sha256_cpu:.2f}x sha256"


def cpu_metric(name: str, samples: Samples, max_ratio: float) -> Metric:
    """Median proxy CPU-s/GiB of the cold GETs against the median of sha256 alone."""
    per_gib = [proxy_cpu_per_gib(f) for f in samples.by_server["proxy"]]
    ratios = sorted(p / s for p, s in zip(per_gib, samples.sha256_cpu, strict=True))
    return Metric(
        name,
        statistics.median(per_gib),
        "CPU-s/GiB",
        statistics.median(samples.sha256_cpu),
        "sha256 alone, one core",
        f"ratio <= {max_ratio}",
        f"ratio<={max_ratio}",
        notes=f"proxy {min(per_gib):.2f}-{max(per_gib):.2f}, ratio per GET "
        + "/".join(f"{r:.2f}" for r in ratios),
    )


@dataclass(frozen=True)
class WarmTarget:
    """One server of a warm comparison: where the blob is, and the process to meter."""

    port: int
    path: str
    pid: int | None


def warm_gets(
    session: Session,
    size: int,
    targets: dict[str, WarmTarget],
    what: str,
    ca: LoopbackCA | None = None,
) -> Samples:
    """One warm-up GET per target, then `session.reps` rounds of one timed GET each, the
    order turning each round so drift in the machine's speed hits every target alike."""
    names = list(targets)
    for name, target in targets.items():
        get_blob(session.client, target.port, target.path, size, f"warm-up {name} GET", ca=ca)
    warm = Samples()
    for rep in range(session.reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            target = targets[name]
            fetch = get_blob(
                session.client,
                target.port,
                target.path,
                size,
                f"{what} {name} GET",
                {name: target.pid},
                ca=ca,
            )
            warm.add(name, fetch)
        log(
            f"{what} {size // MIB}M rep {rep + 1}: "
            + ", ".join(
                f"{name} {warm.by_server[name][-1].mib_s:,.0f} MiB/s "
                f"[{warm.by_server[name][-1].cpu_text()}]"
                for name in names
            )
        )
    return warm


def _warm(session: Session, image: Image, proxy: ProxyProcess) -> Samples:
    """Warm GETs from the proxy and from nginx serving the proxy's own blob directory."""
    upstream = session.upstream
    cached = proxy.blob_path(image.layer_hex)
    if not cached.exists():
        raise BenchError(f"the proxy did not leave {cached} after a complete GET")
    # nginx serves blobs/sha256 of the cache, so /<hh>/<hex> is the same file.
    nginx = NginxProcess(session.workdir / "nginx", cached.parents[1])
    session.stop_at_exit(nginx)
    nginx.start()
    log(f"nginx pid {nginx.pid} on port {nginx.port} serving {nginx.root}")
    mark = upstream.mark()
    targets = {
        "proxy": WarmTarget(proxy.port, image.blob_path(PREFIX), proxy.pid),
        "nginx": WarmTarget(nginx.port, nginx_path(image), nginx.pid),
    }
    warm = warm_gets(session, image.layer_size, targets, "warm")
    warm_upstream = upstream.count(since=mark)
    if warm_upstream:
        session.proxy_issues.append(
            f"warm blob GETs caused {warm_upstream} upstream requests (expected 0)"
        )
    nginx.stop()
    return warm


def nginx_path(image: Image) -> str:
    """The layer's path on an nginx serving the proxy's blobs/sha256 directory."""
    return f"/{image.layer_hex[:2]}/{image.layer_hex}"


def cpu_per_gib(fetches: list[Fetch]) -> dict[str, float]:
    """Median CPU seconds per GiB moved, per process name."""
    names = {name for f in fetches for name in f.cpu}
    return {
        name: statistics.median(sum(f.cpu.get(name, (0.0, 0.0))) / (f.size / GIB) for f in fetches)
        for name in sorted(names)
    }


def _record(session: Session, image: Image, cold: Samples, warm: Samples) -> None:
    label = f"{image.layer_size // MIB}M"
    wp_best, wp_med = warm.speeds("proxy")
    wn_best, wn_med = warm.speeds("nginx")
    cp_best, cp_med = cold.speeds("proxy")
    cd_best, cd_med = cold.speeds("upstream")
    dist_best, dist_med = cold.speeds("distproxy")
    extra_gets = [g for g in cold.upstream_gets if g != 1]
    session.metrics += [
        Metric(
            f"warm_blob_{label}_best",
            wp_best,
            "MiB/s",
            wn_best,
            "nginx sendfile",
            "ratio >= 0.9",
            "ratio>=0.9",
        ),
        Metric(
            f"warm_blob_{label}_median",
            wp_med,
            "MiB/s",
            wn_med,
            "nginx sendfile",
            "ratio >= 0.9",
            "ratio>=0.9",
        ),
        Metric(
            f"cold_blob_{label}_best",
            cp_best,
            "MiB/s",
            cd_best,
            "upstream direct",
            ">= 1000 MiB/s",
            "value>=1000",
        ),
        Metric(
            f"cold_blob_{label}_median",
            cp_med,
            "MiB/s",
            cd_med,
            "upstream direct",
            ">= 1000 MiB/s",
            "value>=1000",
            notes=f"upstream GETs per cold GET {cold.upstream_gets}" if extra_gets else "",
        ),
        cpu_metric(f"cold_blob_{label}_proxy_cpu", cold, 1.6),
        Metric(
            f"cold_blob_{label}_best_vs_distproxy",
            cp_best,
            "MiB/s",
            dist_best,
            "distribution proxy, cold",
        ),
        Metric(
            f"cold_blob_{label}_median_vs_distproxy",
            cp_med,
            "MiB/s",
            dist_med,
            "distribution proxy, cold",
        ),
    ]
    for name, fetches in (
        ("cold via proxy", cold.by_server["proxy"]),
        ("cold upstream direct", cold.by_server["upstream"]),
        ("cold via distribution proxy", cold.by_server["distproxy"]),
        ("warm via proxy", warm.by_server["proxy"]),
        ("warm via nginx", warm.by_server["nginx"]),
    ):
        per = cpu_per_gib(fetches)
        session.cpu_lines.append(f"{name:<28} " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))

    def dicts(samples: Samples, server: str) -> list[dict]:
        return [asdict(f) for f in samples.by_server[server]]

    session.details["warm"] = {"proxy": dicts(warm, "proxy"), "nginx": dicts(warm, "nginx")}
    session.details["cold"] = {
        "proxy": dicts(cold, "proxy"),
        "upstream_direct": dicts(cold, "upstream"),
        "distribution_proxy": dicts(cold, "distproxy"),
        "upstream_blob_gets_per_proxy_get": cold.upstream_gets,
        "sha256_alone_cpu_s_per_gib": cold.sha256_cpu,
    }
