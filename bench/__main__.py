"""`python -m bench list | all | NAME [--quick] [--rounds R] [--seconds S] [--no-record] ...` (from the repo root)."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from types import ModuleType

from bench import BENCHMARKS


def _load(name: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[name])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="3 rounds of 3 s instead of 5 rounds of 10 s")
    p.add_argument("--rounds", type=int, default=None, help="A/B rounds (overrides --quick)")
    p.add_argument("--seconds", type=float, default=None, help="seconds per run (overrides --quick)")
    p.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    p.add_argument("--doc", default=None, help="append to this file instead of docs/benchmarks.md")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="python -m bench", description="murmur benchmarks against peer systems")
    sub = parser.add_subparsers(dest="name", required=True, metavar="{list,all," + ",".join(BENCHMARKS) + "}")
    sub.add_parser("list", help="list the benchmarks")
    _common(sub.add_parser("all", help="run every benchmark in turn"))
    per: dict[str, argparse.ArgumentParser] = {}
    for name in BENCHMARKS:
        mod = _load(name)
        p = sub.add_parser(name, help=mod.DESCRIPTION, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(p)
        mod.add_arguments(p)
        per[name] = p
    return parser, per


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, per = build_parser()
    args = parser.parse_args(argv)
    if args.name == "list":
        for name in BENCHMARKS:
            print(f"{name:10s} {_load(name).DESCRIPTION}")
        return 0
    if args.name == "all":
        common = argv[argv.index("all") + 1:]
        status = 0
        for name in BENCHMARKS:
            print(f"=== bench {name}", flush=True)
            t0 = time.monotonic()
            rc = _load(name).run(per[name].parse_args(common))
            print(f"=== bench {name}: exit {rc}, {time.monotonic() - t0:.0f} s", flush=True)
            status = status or rc
        return status
    return int(_load(args.name).run(args))


if __name__ == "__main__":
    sys.exit(main())
