"""Run `mirror serve` under cProfile (`bench_push.py --profile`): the launcher of the mirror's
process, `profiled.py <stats file> <python> -m mirror.cli serve ...`. The stats are written
when the server exits, which SIGTERM makes it do after draining."""

from __future__ import annotations

import cProfile
import runpy
import sys


def main() -> None:
    stats_path, _python, flag, module, *arguments = sys.argv[1:]
    if (flag, module) != ("-m", "mirror.cli"):
        raise SystemExit(f"expected '<python> -m mirror.cli ...', got {sys.argv[2:]}")
    sys.argv = ["mirror", *arguments]
    profile = cProfile.Profile()
    try:
        profile.runcall(runpy.run_module, "mirror.cli", run_name="__main__")
    except SystemExit:
        pass
    finally:
        profile.dump_stats(stats_path)


if __name__ == "__main__":
    main()
