"""Routing: which remediation function handles a signal. Data, not code.

The mapping (alert name or Splunk search name -> function name) ships as
``defaults/routes.yaml`` and is replaced by an operator's file. Pure apart
from :func:`load_routes`, which reads that file once at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import InvalidInput
from .model import TYPE_SPLUNK_RESULT, Signal, freeze


@dataclass(frozen=True)
class Routes:
    alerts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    searches: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Routes:
        if not isinstance(data, Mapping):
            raise InvalidInput("routes must be a mapping", "routes")
        parts: dict[str, Any] = {}
        for section in ("alerts", "searches", "options"):
            value = data.get(section) or {}
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise InvalidInput(f"routes.{section} must map names to values", section)
            if section != "options" and not all(isinstance(v, str) for v in value.values()):
                raise InvalidInput(f"routes.{section} values must be function names", section)
            parts[section] = freeze(value)
        return cls(**parts)

    def function_for(self, name: str, *, splunk: bool = False) -> str:
        """The function routed to ``name`` ("" when none)."""
        table = self.searches if splunk else self.alerts
        return table.get(name, "")

    def function_for_signal(self, signal: Signal) -> str:
        return self.function_for(signal.name, splunk=signal.type == TYPE_SPLUNK_RESULT)

    def options_for(self, function: str) -> Mapping[str, Any]:
        return self.options.get(function) or MappingProxyType({})


def load_routes(path: str = "") -> Routes:
    """The operator's routes file, or the packaged defaults."""
    import yaml

    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read routes file {path}: {exc.strerror}", "routes") from exc
    else:
        text = resources.files("remediation").joinpath("defaults/routes.yaml").read_text("utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"routes file is not valid YAML: {exc}", "routes") from exc
    return Routes.from_mapping(data)
