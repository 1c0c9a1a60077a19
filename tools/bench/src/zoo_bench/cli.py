"""The `zoo-bench` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import cases as case_table
from .report import render
from .runner import DEFAULT_MANIFESTS, GROUPS, Settings, run_benchmark

EXIT_TARGET_MISSED = 1
EXIT_USAGE = 2


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    all_cases = [c.key for c in (*case_table.LOAD_CASES, *case_table.FORWARD_CASES)]
    result = argparse.ArgumentParser(
        prog="zoo-bench",
        description=(
            "Compare zoo checkpoint loading, building and forward passes with timm and torchvision, and time "
            "the zoo command. Each comparison runs in its own process, alternating the two sides for several "
            "rounds, and reports medians and the median per-round ratio against its target."
        ),
    )

    result.add_argument("--groups", type=_names, default=GROUPS,
                        help=f"comma-separated comparisons to run (default: all): {', '.join(GROUPS)}")
    result.add_argument("--cases", type=_names, default=(),
                        help=f"comma-separated models to run (default: all): {', '.join(all_cases)}")

    result.add_argument("--rounds", type=_positive, default=5, help="rounds of each load comparison (default: 5)")
    result.add_argument("--build-rounds", type=_positive, default=3, help="rounds of each build comparison (default: 3)")
    result.add_argument("--forward-rounds", type=_positive, default=7, help="rounds of each forward comparison (default: 7)")
    result.add_argument("--forward-repeats", type=_positive, default=3,
                        help="forward passes per side in each round, of which the fastest counts (default: 3)")
    result.add_argument("--forward-threads", type=_positive, default=1,
                        help="torch intra-op threads of the forward comparison (default: 1)")
    result.add_argument("--memory-rounds", type=_positive, default=2,
                        help="fresh processes per side for each memory measurement (default: 2)")
    result.add_argument("--command-rounds", type=_positive, default=10,
                        help="rounds of `zoo --help` against an unchanged `zoo build` (default: 10)")

    result.add_argument("--jobs", "-j", type=_positive, default=2, help="worker processes of the parallel `zoo build` (default: 2)")
    result.add_argument("--zoo-manifests", type=Path,
                        help="folder of manifests that the zoo command rows build (default: zoo-manifests, "
                        "or two tiny manifests with --smoke)")

    result.add_argument("--workdir", type=Path, help="folder for checkpoints and scratch files (default: a temporary folder, removed afterwards)")
    result.add_argument("--keep-workdir", action="store_true", help="keep the temporary folder")
    result.add_argument("--smoke", action="store_true",
                        help="use timm's tiny test models, to check the benchmark itself in a few minutes")
    result.add_argument("--worker-timeout", type=float, default=3600.0, help="seconds one comparison may take (default: 3600)")

    result.add_argument("--json", type=Path, help="write the report as JSON to this file")
    result.add_argument("--markdown", type=Path, help="write the report as Markdown tables to this file")
    return result


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; exit 1 when a target is missed or a comparison failed, 2 on bad options."""
    options = parser().parse_args(argv)
    known = {c.key for c in (*case_table.LOAD_CASES, *case_table.FORWARD_CASES, *case_table.SMOKE_LOAD_CASES, *case_table.SMOKE_FORWARD_CASES)}
    unknown_cases = sorted(set(options.cases) - known)
    unknown_groups = sorted(set(options.groups) - set(GROUPS))
    if unknown_cases or unknown_groups:
        print(f"zoo-bench: unknown cases {unknown_cases} or groups {unknown_groups}; see --help for the choices", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    manifests = options.zoo_manifests or (None if options.smoke else DEFAULT_MANIFESTS)
    if {"jobs", "cli"} & set(options.groups) and manifests is not None and not manifests.is_dir():
        print(f"zoo-bench: {manifests} is not a folder of manifests; pass --zoo-manifests PATH", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    settings = Settings(
        groups=options.groups, cases=options.cases, rounds=options.rounds, build_rounds=options.build_rounds,
        forward_rounds=options.forward_rounds, forward_threads=options.forward_threads,
        forward_repeats=options.forward_repeats, memory_rounds=options.memory_rounds,
        command_rounds=options.command_rounds, jobs=options.jobs, manifests=manifests,
        workdir=options.workdir, keep_workdir=options.keep_workdir, smoke=options.smoke,
        worker_timeout_s=options.worker_timeout,
    )
    report = run_benchmark(settings)
    print(render(report))
    if options.json:
        options.json.write_text(json.dumps(report, indent=1) + "\n")
    if options.markdown:
        options.markdown.write_text(render(report, markdown=True) + "\n")
    if report["failed"]:
        sys.exit(EXIT_TARGET_MISSED)
