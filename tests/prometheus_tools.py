"""Finding Prometheus' tools (promtool, prometheus, alertmanager) on PATH.

Debian's packages (``prometheus``, ``prometheus-alertmanager``) install
``promtool``, ``prometheus`` and ``prometheus-alertmanager``; upstream
tarballs name the last one ``alertmanager``. Missing: the test is skipped on
a developer machine, and FAILS under CI (``CI=true``), where the set-up
installs them (``apt-get install prometheus prometheus-alertmanager``).
"""

from __future__ import annotations

import os
import shutil

import pytest

NAMES = {"promtool": ("promtool",), "prometheus": ("prometheus",),
         "alertmanager": ("alertmanager", "prometheus-alertmanager"),
         "amtool": ("amtool",)}
HINT = ("install Prometheus 2.42+ and Alertmanager 0.25+ (Debian/Ubuntu: apt-get install "
        "prometheus prometheus-alertmanager; do not leave the packaged services running)")


def tool(name: str) -> str:
    """The path of ``name`` on PATH; skip (or fail under CI) when missing."""
    for candidate in NAMES[name]:
        found = shutil.which(candidate)
        if found:
            return found
    message = f"{name} not found on PATH: {HINT}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")
