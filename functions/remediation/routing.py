"""Routing: which remediation function handles a signal. Data, not code.

The mapping ships as ``defaults/routes.yaml`` and is replaced by an
operator's file (``REMEDIATION_ROUTES_FILE``). For an alert, in order:

1. the alert's own ``remediation`` label, when it names a known function
   (the shipped Prometheus rules carry it: no routes entry needed);
2. ``rules``: Alertmanager-style label matchers (``=``, ``!=``, ``=~``,
   ``!~``; regexes anchored, a missing label reads as ""), all of a rule's
   matchers must hold, the first rule that matches wins;
3. ``alerts``: exact alert names.

Splunk results use ``searches`` (exact search names) only. Every function a
file names must be known, and every matcher must parse: otherwise the file is
refused at start-up, with the line named (:meth:`Routes.check_functions`).

Pure apart from :func:`load_routes`, which reads that file once at start-up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import InvalidInput
from .model import TYPE_SPLUNK_RESULT, Signal, freeze

#: the label an alert names its function with
REMEDIATION_LABEL = "remediation"
_MATCHER = re.compile(r'\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|!~|!=|=)\s*(.*?)\s*')


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager label matcher (``name op value``)."""

    name: str
    op: str
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name, "")
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        assert self.regex is not None
        found = self.regex.fullmatch(got) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value)}"


def parse_matcher(text: str) -> Matcher:
    """``name="value"`` (or unquoted), as Alertmanager's ``matchers`` take them."""
    if not isinstance(text, str):
        raise InvalidInput(f"a matcher is a string like 'alertname=~\"VLLM.*\"', not "
                           f"{type(text).__name__}", "matcher")
    m = _MATCHER.fullmatch(text)
    if m is None:
        raise InvalidInput(f"cannot parse matcher {text!r} (expected name=value, name!=value, "
                           "name=~regex or name!~regex)", "matcher")
    name, op, raw = m.groups()
    if raw.startswith('"'):
        try:
            value = json.loads(raw)
        except ValueError:
            raise InvalidInput(f"cannot parse matcher {text!r}: bad quoted value",
                               "matcher") from None
        if not isinstance(value, str):
            raise InvalidInput(f"cannot parse matcher {text!r}: bad quoted value", "matcher")
    else:
        if any(c in raw for c in '"{},'):
            raise InvalidInput(f"cannot parse matcher {text!r}: quote the value", "matcher")
        value = raw
    regex = None
    if op in ("=~", "!~"):
        try:
            regex = re.compile(value)
        except re.error as exc:
            raise InvalidInput(f"cannot parse matcher {text!r}: bad regex: {exc}",
                               "matcher") from None
    return Matcher(name, op, value, regex)


@dataclass(frozen=True)
class Rule:
    """A routes-file rule: when every matcher holds, ``function`` handles it."""

    matchers: tuple[Matcher, ...]
    function: str
    line: int = 0

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True)
class Routes:
    alerts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    searches: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    rules: tuple[Rule, ...] = ()
    #: functions an alert's ``remediation`` label may name (empty: the label is not read)
    functions: frozenset[str] = frozenset()
    #: (section, name or index) -> line in the file, for start-up errors
    lines: Mapping[tuple[str, Any], int] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "routes"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *,
                     lines: Mapping[tuple[str, Any], int] | None = None,
                     source: str = "routes") -> Routes:
        lines = lines or {}

        def where(section: str, key: Any) -> str:
            line = lines.get((section, key))
            return f"{source}" + (f" line {line}" if line else "")

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
        raw_rules = data.get("rules") or []
        if not isinstance(raw_rules, list):
            raise InvalidInput(f"{source}: routes.rules must be a list of "
                               "{matchers: [...], function: name}", "rules")
        rules = []
        for i, raw in enumerate(raw_rules):
            at = where("rules", i)
            if not isinstance(raw, Mapping) or set(raw) - {"matchers", "function"} \
                    or not isinstance(raw.get("function"), str) \
                    or not isinstance(raw.get("matchers"), list) or not raw["matchers"]:
                raise InvalidInput(f"{at}: rules[{i}] must be {{matchers: [non-empty list], "
                                   "function: name}", f"rules[{i}]")
            matchers = []
            for j, text in enumerate(raw["matchers"]):
                try:
                    matchers.append(parse_matcher(text))
                except InvalidInput as exc:
                    line = lines.get(("rules.matchers", (i, j))) or lines.get(("rules", i))
                    raise InvalidInput(f"{source}{f' line {line}' if line else ''}: "
                                       f"rules[{i}].matchers[{j}]: {exc}",
                                       f"rules[{i}].matchers[{j}]") from None
            rules.append(Rule(tuple(matchers), raw["function"], lines.get(("rules", i), 0)))
        return cls(**parts, rules=tuple(rules), lines=MappingProxyType(dict(lines)),
                   source=source)

    def check_functions(self, known: Collection[str]) -> Routes:
        """Refuse a file that names a function not in ``known`` (line named);
        the result reads an alert's ``remediation`` label for those functions."""
        def refuse(section: str, key: Any, what: str, function: str) -> InvalidInput:
            line = self.lines.get((section, key))
            return InvalidInput(f"{self.source}{f' line {line}' if line else ''}: {what} names "
                                f"unknown function {function!r} (known: "
                                f"{', '.join(sorted(known))})", section)
        for section, table in (("alerts", self.alerts), ("searches", self.searches)):
            for name, function in table.items():
                if function not in known:
                    raise refuse(section, name, f"{section}.{name}", function)
        for name in self.options:
            if name not in known:
                raise refuse("options", name, f"options.{name}", name)
        for i, rule in enumerate(self.rules):
            if rule.function not in known:
                raise refuse("rules", i, f"rules[{i}]", rule.function)
        return Routes(self.alerts, self.searches, self.options, self.rules,
                      frozenset(known), self.lines, self.source)

    def function_for(self, name: str, *, splunk: bool = False,
                     labels: Mapping[str, str] | None = None) -> str:
        """The function routed to ``name`` (with ``labels``, for an alert) or ""."""
        if splunk:
            return self.searches.get(name, "")
        labels = labels if labels is not None else {"alertname": name}
        label = labels.get(REMEDIATION_LABEL, "")
        if label and label in self.functions:
            return label
        if self.rules:
            if "alertname" not in labels and name:
                labels = {**labels, "alertname": name}
            for rule in self.rules:
                if rule.matches(labels):
                    return rule.function
        return self.alerts.get(name, "")

    def function_for_signal(self, signal: Signal) -> str:
        splunk = signal.type == TYPE_SPLUNK_RESULT
        return self.function_for(signal.name, splunk=splunk,
                                 labels=None if splunk else signal.labels)

    def options_for(self, function: str) -> Mapping[str, Any]:
        return self.options.get(function) or MappingProxyType({})


def _lines(text: str) -> dict[tuple[str, Any], int]:
    """Line numbers (1-based) of the entries of a routes file, for errors."""
    import yaml

    out: dict[tuple[str, Any], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out
    if not isinstance(root, yaml.MappingNode):
        return out
    for key_node, value_node in root.value:
        section = getattr(key_node, "value", "")
        if isinstance(value_node, yaml.MappingNode):
            for k, _v in value_node.value:
                out[(section, k.value)] = k.start_mark.line + 1
        elif isinstance(value_node, yaml.SequenceNode) and section == "rules":
            for i, item in enumerate(value_node.value):
                out[("rules", i)] = item.start_mark.line + 1
                if isinstance(item, yaml.MappingNode):
                    for k, v in item.value:
                        if k.value == "function":
                            out[("rules", i)] = k.start_mark.line + 1
                        if k.value == "matchers" and isinstance(v, yaml.SequenceNode):
                            for j, m in enumerate(v.value):
                                out[("rules.matchers", (i, j))] = m.start_mark.line + 1
    return out


def load_routes(path: str = "", *, known: Collection[str] | None = None) -> Routes:
    """The operator's routes file, or the packaged defaults; with ``known``,
    checked against the function names (see :meth:`Routes.check_functions`)."""
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
    routes = Routes.from_mapping(data, lines=_lines(text), source=path or "defaults/routes.yaml")
    return routes.check_functions(known) if known is not None else routes
