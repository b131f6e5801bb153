"""The emulator stand for game days: the scenario's snapshot seeded into the
Kubernetes API emulator, a live pipeline that really applies, the end state
read back from the emulator."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from remediation.gameday import Scenario, scenario_settings
from remediation.settings import KubeSettings, Settings

from tests.kube_emulator import KubeEmulator
from tests.plugins.app import write_kubeconfig


class EmulatorStand:
    live = True

    def __init__(self) -> None:
        self.emulator = KubeEmulator().start()
        self.workdir = Path(tempfile.mkdtemp(prefix="gameday-"))

    def setup(self, scenario: Scenario) -> Settings:
        self.emulator.add(list(scenario.objects))
        kubeconfig = write_kubeconfig(self.workdir / "kubeconfig", self.emulator.url)
        base = Settings(dry_run=False, kube=KubeSettings(kubeconfig=str(kubeconfig), timeout=5))
        settings = scenario_settings(base, scenario, self.workdir)
        return replace(settings, dry_run=scenario.settings.get(
            "REMEDIATION_DRY_RUN", "false").lower() in ("1", "true", "yes"))

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        resource = self.emulator.resource_type(kind).plural
        return self.emulator.get(resource, namespace or None, name)

    def close(self) -> None:
        self.emulator.close()
