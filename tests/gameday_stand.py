"""The emulator stand for game days: the scenario's objects seeded into the
Kubernetes API emulator, a live pipeline (the real kubernetes client through a
kubeconfig file, ambient credentials, REMEDIATION_DRY_RUN=false unless the
scenario says otherwise) that really applies, the end state and the API
writes read back from the emulator."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from remediation.gameday import Scenario, VirtualClock, Write, scenario_settings
from remediation.settings import KubeSettings, Settings

from tests.kube_emulator import KubeEmulator
from tests.plugins.app import write_kubeconfig

_WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class EmulatorStand:
    live = True

    def __init__(self, emulator: KubeEmulator | None = None) -> None:
        self.emulator = emulator or KubeEmulator().start()
        self._own = emulator is None
        self.workdir = Path(tempfile.mkdtemp(prefix="gameday-"))
        self._seen = 0

    def clock(self, start: float) -> VirtualClock:
        return VirtualClock(start)  # nothing moves in the emulator but the product

    def setup(self, scenario: Scenario) -> Settings:
        self.emulator.add(list(scenario.objects))
        self._seen = len(self.emulator.requests)
        kubeconfig = write_kubeconfig(self.workdir / "kubeconfig", self.emulator.url)
        base = Settings(dry_run=False, kube=KubeSettings(kubeconfig=str(kubeconfig), timeout=5))
        settings = scenario_settings(base, scenario, self.workdir)
        if "REMEDIATION_DRY_RUN" not in scenario.settings:
            settings = replace(settings, dry_run=False)
        return settings

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        rt = self.emulator.resource_type(kind)
        return self.emulator.get(rt.plural, namespace or None, name)

    def list_objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        rt = self.emulator.resource_type(kind)
        return self.emulator.list(rt.plural, namespace or None)

    def writes(self) -> list[Write]:
        out = []
        for r in self.emulator.requests[self._seen:]:
            verb = _WRITE_VERBS.get(r.method)
            body = r.body if isinstance(r.body, dict) else {}
            if verb is None or not r.resource or r.query.get("dryRun") or (
                    body.get("deleteOptions") or {}).get("dryRun"):
                continue
            plural, _, sub = r.resource.partition("/")
            if sub == "eviction":
                verb = "evict"
            elif sub == "scale":
                verb = "scale"
            kind = self.emulator.resource_type(plural).kind
            name = r.name or str((body.get("metadata") or {}).get("name") or "")
            out.append(Write(verb, kind, r.namespace or "", name, r.status))
        return out

    def close(self) -> None:
        if self._own:
            self.emulator.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
