"""The catalog render benchmark (`benchmarks/bench_render.py`), by what each part does:

- `synthetic`: a realistic cache written straight through `ContentStore`;
- `timing`: the timed renders (full, unchanged, incremental) and the CLI run;
- `profiling`: phase timer, cProfile and py-spy for a scenario that missed its target;
- `report`: metrics, the RESULTS and PROFILE blocks, the JSON file.
"""
