"""Every shipped manifest is accepted by a real API server.

The Knative and Prometheus-operator CRDs of ``../shared/schemas`` are
installed into the real kube-apiserver, then each kustomization is applied
the way an operator would: ``kubectl apply -k eventing/overlays/<env>
--server-side --dry-run=server``. The API server validates every object
(schema, unknown fields, admission) and must accept all of them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.realstack.components import ControlPlane, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT.parent / "shared" / "schemas"


def kustomizations() -> list[str]:
    found = ["base"] + sorted(f"overlays/{p.parent.name}"
                              for p in (ROOT / "eventing" / "overlays").glob("*/kustomization.yaml"))
    found += sorted(f"components/{p.parent.name}"
                    for p in (ROOT / "eventing" / "components").glob("*/kustomization.yaml")
                    if yaml.safe_load(p.read_text()).get("kind") != "Component")
    return found


@pytest.fixture(scope="module")
def crds_installed(control_plane: ControlPlane) -> list[str]:
    names = []
    for path in sorted(SCHEMAS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                r = control_plane.apply_objects([doc])[0]
                assert r.status_code in (200, 201), f"{path.name}: {r.status_code} {r.text[:300]}"
                names.append(doc["metadata"]["name"])

    def established() -> bool:
        for name in names:
            crd = control_plane.read(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            if not any(c["type"] == "Established" and c["status"] == "True"
                       for c in crd.get("status", {}).get("conditions", [])):
                return False
        return True

    wait_until("the CRDs to be established", established, None, timeout=60)
    return names


def kubectl(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", f"--kubeconfig={plane.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)


def test_the_shared_crds_are_served(crds_installed):
    assert "services.serving.knative.dev" in crds_installed
    assert "triggers.eventing.knative.dev" in crds_installed


@pytest.mark.parametrize("kustomization", kustomizations())
def test_kustomization_is_accepted_server_side(control_plane, crds_installed, kustomization):
    # The namespace must exist for a server-side dry run of namespaced objects.
    control_plane.apply_objects([{"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": "remediation"}}])
    rendered = kubectl(control_plane, "kustomize", f"eventing/{kustomization}")
    assert rendered.returncode == 0, rendered.stderr
    objects = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert objects

    applied = kubectl(control_plane, "apply", "-k", f"eventing/{kustomization}",
                      "--server-side", "--dry-run=server", "--field-manager=realstack-test")
    assert applied.returncode == 0, applied.stderr + applied.stdout
    lines = [line for line in applied.stdout.splitlines() if line.strip()]
    # kubectl prints one "<kind>/<name> serverside-applied (server dry run)" per object.
    assert len(lines) == len(objects), (lines, [o["kind"] for o in objects])
    assert all("(server dry run)" in line for line in lines), lines
