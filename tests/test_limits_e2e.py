"""Limits are enforced by policy, fed by the ledger: through the HTTP app, the
real kubernetes client and the API emulator, each limit in policy data stops
the action that would exceed it, and the emulator shows exactly the actions
the limits allowed. The Rego unit tests prove the rules with hand-made stats;
these prove the stats the pipeline feeds them are the ledger's (with the
ledger's counts zeroed, the four counting tests fail), that the policy's
dry-run switch reaches the executor, and that a freeze holds end to end."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from remediation.actions.base import RESTARTED_AT_ANNOTATION
from remediation.cli import demo_dir
from remediation.settings import LedgerSettings, PolicySettings, VerifySettings

from tests.plugins.app import BEARER

NS = "llm-serving"
AUTH = {"Authorization": f"Bearer {BEARER}"}
ALERT = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())


def deployment(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "engine", "image": "vllm"}]}}}}


def inference_namespace() -> dict[str, Any]:
    """Restarts happen only in namespaces the policy knows as inference ones."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NS, "labels": {"inferenceremediation.io/inference": "true"}}}


def hung(name: str, incident: str) -> dict[str, Any]:
    """One firing alert about Deployment ``name``; ``incident`` makes its
    fingerprint (a distinct incident each time, as a new alert would be)."""
    doc = copy.deepcopy(ALERT)
    (alert,) = doc["alerts"][:1]
    alert["labels"] = {"alertname": "VLLMEngineHung", "namespace": NS, "deployment": name,
                       "severity": "critical"}
    alert["fingerprint"] = f"{abs(hash((name, incident))):016x}"[:16]
    doc["alerts"] = [alert]
    return doc


def restarted(emu: Any, name: str) -> bool:
    tpl = emu.get("deployments", NS, name)["spec"]["template"]
    return RESTARTED_AT_ANNOTATION in ((tpl.get("metadata") or {}).get("annotations") or {})


@pytest.fixture
def limited(kube_emulator, make_settings, serve_app, tmp_path: Path):
    """``limited(policy_data, target_window=300) -> app`` over five Deployments."""
    kube_emulator.add(inference_namespace())
    for i in range(5):
        kube_emulator.add(deployment(f"engine-{i}"))

    def start(data: dict[str, Any], *, target_window: float = 300.0) -> Any:
        path = tmp_path / "policy-data.json"
        path.write_text(json.dumps({"remediation_config": data}))
        return serve_app(make_settings(
            policy=PolicySettings(data_file=str(path)),
            ledger=LedgerSettings(target_window=target_window),
            verify=VerifySettings(deadline=5.0, interval=0.05)))
    return start


def send(app: Any, doc: dict[str, Any]) -> dict[str, Any]:
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code == 200, resp.text
    (outcome,) = resp.json()["outcomes"]
    return outcome


def test_per_action_limit_stops_the_fourth_restart(limited, kube_emulator):
    app = limited({"actions": {"rollout-restart": {"max_per_window": 3}}})
    outcomes = [send(app, hung(f"engine-{i}", "a")) for i in range(5)]
    assert [o["status"] for o in outcomes] == ["applied"] * 3 + ["denied"] * 2
    # the webhook's answer carries each applied fix's verification too
    assert [o["verification"]["result"] for o in outcomes[:3]] == ["succeeded"] * 3
    assert "verification" not in outcomes[3]
    assert outcomes[3]["reasons"] == [
        "rate limit: 3 rollout-restart action(s) in the window (limit 3)"]
    assert outcomes[4]["reasons"] == outcomes[3]["reasons"]  # denials do not count
    assert [restarted(kube_emulator, f"engine-{i}") for i in range(5)] == \
        [True, True, True, False, False]


def test_cluster_wide_limit_counts_every_action(limited, kube_emulator):
    app = limited({"limits": {"cluster_max_per_window": 2},
                   "actions": {"rollout-restart": {"max_per_window": 100}}})
    outcomes = [send(app, hung(f"engine-{i}", "a")) for i in range(3)]
    assert [o["status"] for o in outcomes] == ["applied", "applied", "denied"]
    assert "cluster-wide rate limit: 2 action(s) in the window (limit 2)" in \
        outcomes[2]["reasons"]
    assert not restarted(kube_emulator, "engine-2")


def test_per_target_cooldown_counts_earlier_incidents_on_the_same_target(limited,
                                                                         kube_emulator):
    # the ledger's own one-action-per-target window off, so the policy decides
    app = limited({"actions": {"rollout-restart": {"max_per_target_in_window": 1}}},
                  target_window=0)
    first = send(app, hung("engine-0", "first"))
    generation = kube_emulator.get("deployments", NS, "engine-0")["metadata"]["generation"]
    second = send(app, hung("engine-0", "second"))  # another incident, same Deployment
    other = send(app, hung("engine-1", "first"))
    assert (first["status"], second["status"], other["status"]) == \
        ("applied", "denied", "applied")
    assert second["reasons"] == [
        "cooldown: engine-0 already acted on 1 time(s) in the window (limit 1)"]
    assert kube_emulator.get("deployments", NS, "engine-0")["metadata"]["generation"] \
        == generation  # not restarted again


def test_the_policy_dry_run_switch_writes_nothing(limited, kube_emulator):
    app = limited({"force_dry_run": True})
    outcome = send(app, hung("engine-0", "a"))
    assert outcome["status"] == "planned"
    assert "server-side dry run accepted" in outcome["reasons"]
    assert not restarted(kube_emulator, "engine-0")
    patches = [r for r in kube_emulator.requests if r.method == "PATCH"]
    assert patches and all(r.query.get("dryRun") == "All" for r in patches)


def test_a_change_freeze_given_with_an_offset_holds(limited, kube_emulator):
    cet = timezone(timedelta(hours=2))
    now = datetime.now(UTC)
    freeze = {"name": "release-week", "start": (now - timedelta(hours=1)).astimezone(cet)
              .isoformat(timespec="seconds"),
              "end": (now + timedelta(hours=1)).astimezone(cet).isoformat(timespec="seconds")}
    app = limited({"freezes": [freeze]})
    outcome = send(app, hung("engine-0", "a"))
    assert outcome["status"] == "denied"
    assert outcome["reasons"] == [f"change freeze release-week until {freeze['end']}"]
    assert not restarted(kube_emulator, "engine-0")


def test_limits_are_counted_across_app_restarts(kube_emulator, make_settings, serve_app,
                                                tmp_path):
    """The counts come from the ledger, not from memory: a second app on the
    same ledger file (a new pod) still sees the first one's actions."""
    ledger = tmp_path / "ledger.db"
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"remediation_config": {
        "actions": {"rollout-restart": {"max_per_window": 2}}}}))

    def app() -> Any:
        return serve_app(make_settings(
            policy=PolicySettings(data_file=str(data)),
            ledger=LedgerSettings(path=str(ledger)),
            verify=VerifySettings(deadline=5.0, interval=0.05)))
    kube_emulator.add(inference_namespace())
    for i in range(3):
        kube_emulator.add(deployment(f"engine-{i}"))
    first = app()
    assert [send(first, hung(f"engine-{i}", "a"))["status"] for i in range(2)] == \
        ["applied", "applied"]
    second = app()
    assert send(second, hung("engine-2", "a"))["status"] == "denied"
    assert not restarted(kube_emulator, "engine-2")


def test_a_denied_alert_does_not_make_the_rest_of_its_group_duplicates(limited,
                                                                       kube_emulator):
    """Within one Alertmanager group the pipeline remembers a target it acted
    on (a storm asks thousands of times); a denial is not remembered: every
    alert of the group is judged, and each is denied on its own."""
    app = limited({"actions": {"rollout-restart": {"max_per_window": 0}}})
    doc = hung("engine-0", "a")
    alerts = []
    for i in range(3):
        alert = copy.deepcopy(doc["alerts"][0])
        alert["labels"]["replica"] = str(i)
        alert["fingerprint"] = f"{i:016x}"
        alerts.append(alert)
    doc["alerts"] = alerts
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert [o["status"] for o in resp.json()["outcomes"]] == ["denied"] * 3
    assert not restarted(kube_emulator, "engine-0")


def test_a_group_on_one_target_acts_once_and_says_why_for_the_rest(limited, kube_emulator):
    app = limited({})
    doc = hung("engine-1", "a")
    base = doc["alerts"][0]
    doc["alerts"] = []
    for i in range(50):  # per-pod alerts: one incident each, one Deployment
        alert = copy.deepcopy(base)
        alert["labels"]["pod"] = f"engine-1-{i}"
        alert["fingerprint"] = f"{i:016x}"
        doc["alerts"].append(alert)
    doc["alerts"] += doc["alerts"][:10]  # and Alertmanager repeats some
    outcomes = app.post("/webhooks/alertmanager", json=doc, headers=AUTH).json()["outcomes"]
    assert [o["status"] for o in outcomes].count("applied") == 1
    assert all(o["status"] == "duplicate" for o in outcomes[1:])
    assert "already applied" in outcomes[1]["reasons"][0]
    assert "already handled for this incident (applied)" in outcomes[50]["reasons"][0]
    patches = [r for r in kube_emulator.requests if r.method == "PATCH"]
    assert len(patches) == 1
