"""Every module of the package imports alone, in a fresh interpreter.

An import circle can hide behind the order a test suite happens to import
things in (``restart_engine -> escalation -> drain_gpu_node -> restart_engine``
once broke ``python -c "import remediation.actions.escalation"`` while every
test passed): each module here is the first thing its interpreter imports.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import function
import remediation

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> list[str]:
    names = [remediation.__name__, function.__name__]
    for package in (remediation,):
        names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return sorted(names)


MODULES = _modules()


def _import_alone(name: str) -> tuple[str, int, str]:
    proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False)
    return name, proc.returncode, proc.stderr[-1500:]


def test_the_walk_finds_the_packages_modules():
    for expected in ("remediation.actions.escalation", "remediation.actions.kit.gpu",
                     "remediation.gameday.runner", "remediation.ports", "remediation.cli"):
        assert expected in MODULES


@pytest.mark.timeout(600)
def test_every_module_imports_alone_in_a_fresh_interpreter():
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_import_alone, MODULES))
    broken = [f"{name}:\n{err}" for name, code, err in results if code != 0]
    assert not broken, "\n\n".join(broken)
