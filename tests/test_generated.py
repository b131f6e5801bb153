"""One declaration per remediation: the catalogue is complete, and every
file generated from it is what the declarations give (``remediate generate``)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

from remediation import cli, generate
from remediation.actions.catalogue import CATALOGUE
from remediation.actions.verify import check, validate
from remediation.model import ObjectRef, Plan
from remediation.routing import load_routes
from remediation.runtime import build_pipeline
from remediation.settings import KubeSettings, Settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_generated_files_match_the_declarations():
    stale = generate.sync(ROOT, CATALOGUE, write=False)
    assert stale == [], f"run `remediate generate`: {stale} drifted from the declarations"


def test_drift_is_found_and_regenerating_fixes_it(tmp_path, capsys):
    for rel in ("eventing", "vault", "policies", "README.md"):
        src = ROOT / rel
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / rel)
    role = tmp_path / "vault/roles/scale-engine.json"
    role.write_text(role.read_text().replace('"patch"', '"patch", "delete"'))
    (tmp_path / "eventing/base/functions/rebalance-gpu-pods.yaml").unlink()
    data = tmp_path / "policies/data.json"
    doc = json.loads(data.read_text())
    doc["remediation_config"]["actions"]["scale-out"]["max_per_window"] = 99
    data.write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("| `scale-engine` |", "| `scale-it` |"))

    assert cli.main(["generate", "--check", "--root", str(tmp_path)]) == cli.EXIT_RETRY
    out = capsys.readouterr().out
    for rel in ("vault/roles/scale-engine.json", "eventing/base/functions/rebalance-gpu-pods.yaml",
                "policies/data.json", "README.md"):
        assert f"stale {rel}" in out
    assert cli.main(["generate", "--root", str(tmp_path)]) == cli.EXIT_OK
    assert generate.sync(tmp_path, CATALOGUE, write=False) == []
    # the operator's part of the policy data is kept
    assert json.loads(data.read_text())["remediation_config"]["limits"] == \
        doc["remediation_config"]["limits"]


def test_every_remediation_declares_every_piece():
    routes = load_routes()
    kustomization = yaml.safe_load(
        (ROOT / "eventing/base/functions/kustomization.yaml").read_text())
    policy_actions = generate.policy_actions(CATALOGUE)
    readme = (ROOT / "README.md").read_text()
    for name, r in CATALOGUE.items():
        assert r.name == name and callable(r.planner) and r.summary and r.purpose, name
        assert r.actions, f"{name}: no actions"
        for a in r.actions:
            assert callable(a.check), f"{name}: {a.name} has no verification check"
            assert a.name in policy_actions, f"{name}: no policy data declares {a.name}"
        assert r.labels and all(r.labels), f"{name}: no label contract"
        assert r.rbac and r.vault.rules, f"{name}: no RBAC or Vault rules"
        assert r.vault.role_type in ("Role", "ClusterRole") and r.vault.namespaces, name
        assert name in set(routes.alerts.values()) | set(routes.searches.values()), \
            f"{name}: no default route reaches it"
        assert f"{name}.yaml" in kustomization["resources"], name
        for rel in (f"eventing/base/functions/{name}.yaml", f"vault/policies/{name}.hcl",
                    f"vault/roles/{name}.json"):
            assert (ROOT / rel).is_file(), f"{name}: {rel} is missing"
        assert f"| `{name}` |" in readme, f"{name}: not in the README's tables"
    # the Rego policy knows every declared action
    data = json.loads((ROOT / "policies/data.json").read_text())
    assert set(data["remediation_config"]["actions"]) == set(policy_actions)


def test_relative_and_ladder_knowledge_is_declared():
    relative = {a.name for r in CATALOGUE.values() for a in r.actions if a.relative}
    assert relative == {"scale-out"}
    ladder = {a.name: a.ladder for a in CATALOGUE["restart-engine"].actions}
    assert ladder == {"rollout-restart": 0, "delete-pod": 0, "reschedule-pod": 1,
                      "cordon-drain": 2}


def _broken_catalogue():
    r = CATALOGUE["scale-engine"]
    spec = dataclasses.replace(r.actions[0], check=None)
    return {**CATALOGUE, "scale-engine": dataclasses.replace(r, actions=(spec,))}


def test_a_missing_verification_check_stops_the_start_up():
    with pytest.raises(ValueError, match="scale-out has no verification check"):
        validate(_broken_catalogue())
    settings = Settings(kube=KubeSettings(snapshot=str(
        ROOT / "functions/remediation/defaults/demo/cluster.yaml")))
    with pytest.raises(ValueError, match="no verification check"):
        build_pipeline(settings, catalogue=_broken_catalogue())


def test_an_undeclared_action_fails_verification_instead_of_passing():
    plan = Plan("scale-engine", "scale-in", ObjectRef("Deployment", "ns", "d"), ())
    verdict = check(plan, _FACTS)
    assert not verdict.done and verdict.failed
    assert "no verification check is declared for scale-in" in verdict.detail


class _NoFacts:
    def get(self, kind, namespace, name):
        return None

    def list(self, kind, namespace=None, *, labels=None, node=None):
        return []


_FACTS = _NoFacts()
