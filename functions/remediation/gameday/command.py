"""``remediate gameday``: the subcommand the CLI registers (:func:`add_parser`)
and runs (:func:`run_cli`). Imports nothing of the CLI."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ..errors import InvalidInput


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``gameday`` subcommand, for ``remediate``'s argparse subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "gameday", help="run game-day scenario files plan-only on their snapshots",
        description="Replay each scenario's timed events through the full path against its "
                    "snapshot (plan only) and check the expected outcomes. Exit 0: all "
                    "passed, 1: a check failed, 2: a scenario file is invalid.")
    p.add_argument("paths", nargs="+", metavar="SCENARIO", help="scenario files (YAML)")
    p.add_argument("--json", action="store_true", help="one JSON report per scenario")
    p.set_defaults(gameday_main=run_cli)
    return p


def run_cli(args: argparse.Namespace, out: TextIO | None = None,
            err: TextIO | None = None) -> int:
    """Run ``remediate gameday`` from the namespace :func:`add_parser` parsed."""
    return main(args.paths, out or sys.stdout, err or sys.stderr,
                as_json=bool(getattr(args, "json", False)))


def main(paths: Sequence[str], out: TextIO, err: TextIO, *, as_json: bool = False) -> int:
    """Every scenario on the snapshot stand: 0 all passed, 1 a check failed,
    2 a scenario file is invalid (nothing is run then)."""
    from .runner import SnapshotStand, run_scenario  # the path: only when a scenario runs
    from .scenario import load_scenario

    scenarios = []
    for p in paths:
        try:
            scenarios.append(load_scenario(p))
        except InvalidInput as exc:
            err.write(f"remediate: invalid scenario: {exc}\n")
            return 2
    failed = 0
    for scenario in scenarios:
        stand = SnapshotStand()
        try:
            report = run_scenario(scenario, stand)
        finally:
            stand.close()
        failed += not report.passed
        out.write(json.dumps(report.as_dict(), sort_keys=True, default=str) + "\n" if as_json
                  else report.render() + "\n\n")
    if not as_json:
        out.write(f"{len(scenarios) - failed} of {len(scenarios)} scenario(s) passed "
                  "(plan only: object and write expectations need a live stand)\n")
    return 1 if failed else 0
