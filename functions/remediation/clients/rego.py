"""The embedded Rego engine: the ONLY module that imports ``regorus`` (lazily).

regorus (Microsoft's Rust Rego engine; PyPI ``gordon-to-regorus``, pinned)
parses the policies and data ONCE at start-up; each evaluation sets the input
and evaluates ``data.<package>.<rule>``. regorus engines are bound to the
thread that made them, so each serving thread compiles its own engine once
(see :class:`EmbeddedPolicyEngine`). Fail closed: any engine error becomes a deny document with the
reason, never an allow and never an exception.

Why not regopy (rego-cpp), the other engine on PyPI: version 1.5.2 crashes the
process (SIGSEGV) when builtins are evaluated under ``with input as``, which
every Rego unit test uses, its ``Output.binding()`` aborts on some outputs,
and a decision took about 1 ms against regorus' 0.2 ms here.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..model import deep_merge
from ..settings import PolicySettings

log = logging.getLogger("remediation.rego")



def default_policy_dir() -> Path:
    try:
        path = Path(str(resources.files("remediation_policies")))
        if (path / "remediation.rego").exists():
            return path
    except Exception:  # noqa: BLE001 - not installed as a package: use the repo folder
        pass
    return Path(__file__).resolve().parents[3] / "policies"


def load_policy_sources(policy_dir: Path, data_file: str = "",
                        include_tests: bool = False) -> tuple[dict[str, str], dict[str, Any]]:
    """(modules by file name, merged data) from a policy folder."""
    modules = {p.name: p.read_text("utf-8") for p in sorted(policy_dir.glob("*.rego"))
               if include_tests or not p.name.endswith("_test.rego")}
    if not modules:
        raise InvalidInput(f"no Rego modules in {policy_dir}", "policy_dir")
    data: dict[str, Any] = {}
    data_path = policy_dir / "data.json"
    if data_path.exists():
        data = json.loads(data_path.read_text("utf-8"))
    if data_file:
        import yaml

        try:
            extra = yaml.safe_load(Path(data_file).read_text("utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidInput(f"cannot read policy data {data_file}: {exc}", "data_file") from None
        if not isinstance(extra, Mapping):
            raise InvalidInput("policy data must be a mapping", "data_file")
        data = deep_merge(data, extra)
    return modules, data


class EmbeddedPolicyEngine:
    """Evaluate ``data.<package>.<rule>`` in-process.

    regorus engines are bound to the thread that made them, so each serving
    thread gets its own engine, compiled once from the same sources on first
    use (about 2 ms) and dropped with the thread. A WSGI/ASGI server with a
    fixed thread pool (waitress, a2wsgi) therefore compiles once per thread
    and never hands an evaluation to another thread (that hand-off cost
    about 100 us per decision)."""

    def __init__(self, settings: PolicySettings | None = None) -> None:
        settings = settings or PolicySettings()
        policy_dir = Path(settings.policy_dir) if settings.policy_dir else default_policy_dir()
        self._modules, self._data = load_policy_sources(policy_dir, settings.data_file)
        self._data_json = json.dumps(self._data)
        self._rule = f"data.{settings.package}.{settings.rule}"
        self.policy_dir = policy_dir
        self._local = threading.local()
        self._closed = False
        # Compile and evaluate once now: a policy that does not compile, or
        # fails on an empty input, fails at start-up, not at 3 a.m.
        self._engine_here()
        doc = self.evaluate({})
        if "policy engine error" in " ".join(map(str, doc.get("reasons") or [])):
            raise InvalidInput(f"policy fails to evaluate: {doc['reasons']}", "policy")

    def _engine_here(self) -> Any:
        engine = getattr(self._local, "engine", None)
        if engine is None:
            engine = self._local.engine = _engine(self._modules, self._data,
                                                  data_json=self._data_json)
        return engine

    def evaluate(self, input_doc: Mapping[str, Any]) -> dict[str, Any]:
        try:
            if self._closed:
                raise RuntimeError("policy engine is closed")
            engine = self._engine_here()
            try:  # plain JSON-shaped data goes in as it is (no encode + parse)
                engine.set_input(input_doc)
            except (TypeError, ValueError, OverflowError):  # anything else: as JSON text
                engine.set_input_json(json.dumps(input_doc, default=str))
            result = engine.eval_rule(self._rule)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - pyo3 panics are BaseExceptions: fail closed
            log.error("policy engine error: %s", type(exc).__name__)
            return {"allow": False,
                    "reasons": [f"policy engine error: {str(exc)[:200] or type(exc).__name__}"]}
        if result is None:
            return {}
        return result if isinstance(result, dict) else {"allow": False, "reasons": [
            "policy returned a non-object decision"]}

    def close(self) -> None:
        """Refuse further evaluations; this thread's engine is dropped here,
        the others with their threads."""
        self._closed = True
        self._local.__dict__.pop("engine", None)


def _engine(modules: Mapping[str, str], data: Mapping[str, Any], *,
            data_json: str | None = None) -> Any:
    import regorus

    engine = regorus.Engine()
    try:
        for name, text in modules.items():
            engine.add_policy(name, text)
        engine.add_data_json(data_json if data_json is not None else json.dumps(data))
    except Exception as exc:  # noqa: BLE001 - regorus raises RuntimeError with the parse error
        raise InvalidInput(f"policy does not compile: {exc}", "policy") from None
    return engine


def run_rego_tests(policy_dir: str | Path | None = None) -> list[tuple[str, bool, str]]:
    """Run every ``test_*`` rule of the ``*_test.rego`` modules, as ``opa test``
    does: a test passes when its rule evaluates to true. (name, passed, message)."""
    import re

    folder = Path(policy_dir) if policy_dir else default_policy_dir()
    modules, data = load_policy_sources(folder, include_tests=True)
    engine = _engine(modules, data)
    results: list[tuple[str, bool, str]] = []
    for name, text in modules.items():
        if not name.endswith("_test.rego"):
            continue
        package = re.search(r"^package\s+([\w.]+)", text, re.M)
        if not package:
            results.append((name, False, "no package"))
            continue
        for rule in sorted(set(re.findall(r"^(test_\w+)\s+if\b", text, re.M))):
            qualified = f"data.{package.group(1)}.{rule}"
            try:
                value = engine.eval_rule(qualified)
                ok = value is True
                results.append((qualified, ok, "" if ok else f"evaluated to {value!r}"))
            except Exception as exc:  # noqa: BLE001
                results.append((qualified, False, str(exc)[:200]))
    return results
