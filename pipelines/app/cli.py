"""The ``cvserve`` command: one entry point, subcommands wiring every folder together."""

from __future__ import annotations

import argparse
import importlib
import sys

from cvserve.pipelines.app.run_command import run_command

# Every command is added the same way: each module listed has `register(commands, benches)`,
# where `commands` are the subparsers of `cvserve` and `benches` those of `cvserve bench`.
COMMAND_MODULES: tuple[str, ...] = (
    "cvserve.pipelines.app.serving_commands",
    "cvserve.pipelines.app.bench_commands",
    "cvserve.pipelines.app.kafka_commands",
    "cvserve.pipelines.app.profile_commands",
    "cvserve.pipelines.app.preprocess_commands",
    "cvserve.pipelines.app.tune_commands",
    "cvserve.pipelines.app.redis_commands",
    "cvserve.pipelines.app.deploy_commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="benchmarks (tables + JSON)")
    benches = bench.add_subparsers(dest="target", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub, benches)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
