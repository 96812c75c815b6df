"""A real Prometheus (Debian's `prometheus`) on a free loopback port, scraping one target
every second, with its own config and storage under a work directory; stopped by its PID.
Also a parser of `/metrics` text for the tests that read it directly."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from .processes import LOOPBACK, ServerProcess, free_port, spawn_logged

PROMETHEUS_BINARY = "/usr/bin/prometheus"
JOB = "hpc-mirror"


class PrometheusProcess(ServerProcess):
    """`prometheus` scraping `target` (host:port) at `/metrics` every second."""

    name = "prometheus"
    ready_path = "/-/ready"

    def __init__(self, workdir: Path, target: str) -> None:
        super().__init__(start_timeout=30.0)
        self.workdir = workdir
        self.target = target
        self.port = free_port()
        self.config_path = workdir / "prometheus.yml"
        self.log_path = workdir / "prometheus.log"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [self.target]}]}],
        }
        self.config_path.write_text(json.dumps(config))  # JSON is YAML
        command = [
            PROMETHEUS_BINARY,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--log.level=warn",
        ]
        return spawn_logged(command, self.log_path)

    def _failure_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- the HTTP API ----------------------------------------------------------------------
    def query(self, expr: str) -> list[dict]:
        """The vector an instant query of `expr` evaluates to now."""
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str) -> float:
        """The one value of `expr` (a `sum(...)`, say); 0 when no series matches yet."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else 0.0

    def scraped_after(self, moment: float, timeout: float = 60.0) -> None:
        """Wait until a successful scrape started after `moment` (Unix seconds): from
        then on every query sees the target's values as they were at `moment` or later."""
        deadline = time.monotonic() + timeout
        while True:
            # timestamp() of a bare selector is the sample's (of any other expression, now's).
            scraped = self.query(f'timestamp(up{{job="{JOB}"}})')
            if scraped and float(scraped[0]["value"][1]) > moment:
                # up is 0 when the scrape failed (the target did not answer in time, say)
                if self.value(f'up{{job="{JOB}"}}') == 1:
                    return
            assert time.monotonic() < deadline, f"no scrape after {moment}:\n{self._failure_log()}"
            time.sleep(0.2)

    def settled(self, expr: str) -> float:
        """The value of `expr` in a scrape made after this call."""
        self.scraped_after(time.time())
        return self.value(expr)


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """`/metrics` text as {(sample name, labels): value}; fails on text Prometheus would
    not accept."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)
