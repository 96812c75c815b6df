"""The load benchmark (`benchmarks/bench_load.py`), by what each part does:

- `plan`: client counts and sizes of a full and a --quick run, and the RSS target;
- `footprint`: the proxy's RSS, fds and RLIMIT_NOFILE from /proc, and a sampler;
- `streams`: many raw-socket blob GETs at once from one thread;
- `subject`: the proxy under load (a fresh process per scenario) and what every scenario
  reports about it;
- scenarios: `manifests` (wrk), `warm_streams`, `hangups`, `cold_herd`.

Servers, seeding, wrk, CPU meters and the RESULTS table come from `benchmarks/proxy/`.
"""
