"""The proxy benchmark (`benchmarks/bench_proxy.py`), by what each part does:

- `servers`: the upstream registry, distribution's pull-through cache, hpc-mirror, nginx;
- `seed`: the random layers and images pushed to the upstream;
- `clients`: socket and curl blob GETs, wrk, plain GETs; `cpu`: CPU seconds from /proc;
- `session`: one run's servers, content and findings;
- scenarios: `ceilings`, `blob_gets` (warm and cold), `herd` (32 cold clients at once),
  `manifest_rps`;
- `report`: metrics, the RESULTS table, the JSON file.
"""
