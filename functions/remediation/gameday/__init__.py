"""Game days: a scenario file (a cluster snapshot, a timed list of events, the
expected end state) replayed through the full path on a virtual clock.

- :mod:`.scenario`: the file format (its docstring) and the loader;
- :mod:`.checks`: outcomes, objects and writes against what was expected;
- :mod:`.runner`: stands, the virtual clock, :func:`run_scenario`;
- :mod:`.command`: ``remediate gameday`` (registered by the CLI).
"""

from __future__ import annotations

from .checks import Check, Delivery, Report, check_actions, check_object, check_outcomes
from .command import add_parser, main, run_cli
from .runner import (
    RealTimeClock,
    SnapshotStand,
    Stand,
    Unresolved,
    VirtualClock,
    current_pod,
    resolve_document,
    run_scenario,
    scenario_routes,
    scenario_settings,
)
from .scenario import (
    ActionExpectation,
    Approve,
    ObjectExpectation,
    OutcomeExpectation,
    PodRef,
    Scenario,
    TimedEvent,
    Write,
    load_scenario,
    lookup,
    parse_scenario,
)

__all__ = ["ActionExpectation", "Approve", "Check", "Delivery", "ObjectExpectation",
           "OutcomeExpectation", "PodRef", "RealTimeClock", "Report", "Scenario",
           "SnapshotStand", "Stand", "TimedEvent", "Unresolved", "VirtualClock", "Write",
           "add_parser", "check_actions", "check_object", "check_outcomes", "current_pod",
           "load_scenario", "lookup", "main", "parse_scenario", "resolve_document", "run_cli",
           "run_scenario", "scenario_routes", "scenario_settings"]
