"""How big a load run is (the full run, or --quick) and the targets it is judged by."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.harness import MIB

PEAK_RSS_TARGET_MIB = 150
"""No scenario may take the proxy's resident memory above this (issue 8)."""


@dataclass(frozen=True)
class Plan:
    """Client counts, blob sizes and durations of the four scenarios."""

    manifest_clients: int
    manifest_seconds: int
    stream_clients: int
    stream_size: int  # the cached blob the streams and the hang-ups read
    cold_clients: int
    cold_size: int  # the blob the cold herd asks for
    hangup_clients: int
    hangup_after: int  # body bytes a client reads before it hangs up
    settle_seconds: float  # how long the proxy gets to release what the hang-ups held


FULL = Plan(
    manifest_clients=1000,
    manifest_seconds=10,
    stream_clients=200,
    stream_size=64 * MIB,
    cold_clients=300,
    cold_size=256 * MIB,
    hangup_clients=500,
    hangup_after=MIB,
    settle_seconds=10.0,
)

QUICK = Plan(
    manifest_clients=250,
    manifest_seconds=3,
    stream_clients=50,
    stream_size=16 * MIB,
    cold_clients=75,
    cold_size=64 * MIB,
    hangup_clients=125,
    hangup_after=MIB,
    settle_seconds=5.0,
)
