"""Error budgets for the policy (issue 16): which SLO a target belongs to,
the PromQL that reads it, and the ``slo`` policy input built from the answers.

Pure: the configuration document is parsed here, Prometheus is asked by
``clients.prometheus``. The configuration (``REMEDIATION_SLO_FILE``, YAML or
JSON) maps targets to SLOs::

    windows: ["5m", "1h", "6h"]          # burn-rate windows read (default)
    slos:
      - service: vllm-llama-7b             # names the SLO in reasons
        match: {namespace: llm-serving, name: "vllm-*"}   # globs on the target
        sloth: {service: vllm-llama-7b, slo: requests-availability}
      - service: gpu-fleet
        match: {kind: Node}
        queries:                           # any recording rules (Pyrra...)
          burn_rate: 'gpu:errors:burnrate{window}{slo="fleet"} / 0.001'
          error_budget_remaining: 'gpu:budget_remaining{slo="fleet"}'

The first entry whose ``match`` fits the target (keys ``kind``,
``namespace``, ``name``; shell globs) is its SLO. A target no entry matches
gets no ``slo`` input: the policy decides as without SLOs.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from ..model import ObjectRef

__all__ = ["SLOConfig", "SLOEntry", "load_slo_config", "slo_input", "unavailable"]

DEFAULT_WINDOWS = ("5m", "1h", "6h")
MATCH_KEYS = ("kind", "namespace", "name")
_WINDOW = re.compile(r"^[0-9]+[smhdw]$")
_LABEL_VALUE = re.compile(r'^[^"\\\n]*$')

#: Sloth's recording rules: the error ratio per window over the budget ratio
#: (1 - objective) is the burn rate; the period's remaining budget as a ratio
SLOTH_BURN_RATE = ("slo:sli_error:ratio_rate{{window}}{{{sel}}} / on(sloth_id, sloth_service, "
                   "sloth_slo) group_left() slo:error_budget:ratio{{{sel}}}")
SLOTH_BUDGET = "slo:period_error_budget_remaining:ratio{{{sel}}}"


@dataclass(frozen=True)
class SLOEntry:
    service: str
    match: Mapping[str, str]
    burn_rate: str  # PromQL with {window}
    error_budget_remaining: str  # PromQL

    def matches(self, target: ObjectRef) -> bool:
        have = target.as_dict()
        return all(fnmatch.fnmatchcase(have.get(k, ""), pattern)
                   for k, pattern in self.match.items())

    def queries(self, windows: tuple[str, ...]) -> dict[str, str]:
        """``{"burn_rate:<w>": promql, ..., "error_budget_remaining": promql}``."""
        out = {f"burn_rate:{w}": self.burn_rate.replace("{window}", w) for w in windows}
        out["error_budget_remaining"] = self.error_budget_remaining
        return out


@dataclass(frozen=True)
class SLOConfig:
    entries: tuple[SLOEntry, ...] = ()
    windows: tuple[str, ...] = DEFAULT_WINDOWS

    def lookup(self, target: ObjectRef) -> SLOEntry | None:
        return next((e for e in self.entries if e.matches(target)), None)


def _text(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: {key} must be a non-empty string")
    return value


def _entry(doc: Any, i: int) -> SLOEntry:
    where = f"slos[{i}]"
    if not isinstance(doc, Mapping):
        raise InvalidInput(f"{where} must be a mapping")
    service = _text(doc, "service", where)
    match = doc.get("match") or {}
    if not isinstance(match, Mapping) or not match or \
            not all(k in MATCH_KEYS and isinstance(v, str) for k, v in match.items()):
        raise InvalidInput(f"{where}: match must map some of {', '.join(MATCH_KEYS)} to globs")
    sloth, queries = doc.get("sloth"), doc.get("queries")
    if (sloth is None) == (queries is None):
        raise InvalidInput(f"{where}: give exactly one of sloth or queries")
    if sloth is not None:
        if not isinstance(sloth, Mapping):
            raise InvalidInput(f"{where}: sloth must be a mapping")
        labels = {"sloth_service": _text(sloth, "service", f"{where}.sloth"),
                  "sloth_slo": _text(sloth, "slo", f"{where}.sloth")}
        if not all(_LABEL_VALUE.match(v) for v in labels.values()):
            raise InvalidInput(f"{where}.sloth: label values may not hold quotes or backslashes")
        sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
        burn, budget = SLOTH_BURN_RATE.format(sel=sel), SLOTH_BUDGET.format(sel=sel)
    else:
        if not isinstance(queries, Mapping):
            raise InvalidInput(f"{where}: queries must be a mapping")
        burn = _text(queries, "burn_rate", f"{where}.queries")
        budget = _text(queries, "error_budget_remaining", f"{where}.queries")
        if "{window}" not in burn:
            raise InvalidInput(f"{where}.queries: burn_rate must contain {{window}}")
    return SLOEntry(service=service, match=dict(match), burn_rate=burn,
                    error_budget_remaining=budget)


def load_slo_config(doc: Any) -> SLOConfig:
    """Parse the SLO file's document; ``InvalidInput`` names what is wrong."""
    if not isinstance(doc, Mapping):
        raise InvalidInput("SLO file: expected a mapping with 'slos'")
    windows = doc.get("windows", list(DEFAULT_WINDOWS))
    if not isinstance(windows, list) or not windows or \
            not all(isinstance(w, str) and _WINDOW.match(w) for w in windows):
        raise InvalidInput("SLO file: windows must be a list like ['5m', '1h', '6h']")
    slos = doc.get("slos")
    if not isinstance(slos, list):
        raise InvalidInput("SLO file: slos must be a list")
    return SLOConfig(entries=tuple(_entry(e, i) for i, e in enumerate(slos)),
                     windows=tuple(windows))


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def unavailable(entry: SLOEntry, reason: str) -> dict[str, Any]:
    """The input when the SLO could not be read: rules that relax never fire."""
    return {"available": False, "service": entry.service, "reason": reason}


def slo_input(entry: SLOEntry, windows: tuple[str, ...],
              values: Mapping[str, float | None], *, source: str) -> dict[str, Any]:
    """The ``slo`` input from the answers to :meth:`SLOEntry.queries`
    (``None``: no data). Every value must be there and finite, else the SLO
    is unavailable, naming what is missing."""
    missing = [name for name in entry.queries(windows) if not _finite(values.get(name))]
    if missing:
        return unavailable(entry, f"no data for {', '.join(missing)}")
    return {"available": True, "service": entry.service, "source": source,
            "burn_rates": {w: values[f"burn_rate:{w}"] for w in windows},
            "error_budget_remaining": values["error_budget_remaining"]}
