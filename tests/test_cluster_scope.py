"""Issue 15, findings 3 and 7: an event's ``cluster`` value never chooses
where a write goes, and never makes a new API client.

The attack: an alert labelled with another cluster's name. Before the fix
planning read this cluster while credentials (Vault's, per cluster name) and
the write went to the named one, and every distinct name got its own API
client, cached forever.
"""

from __future__ import annotations

import json
from typing import Any

from remediation.cli import demo_dir
from remediation.credentials import AmbientCredentials

from tests.plugins.app import BEARER

AUTH = {"Authorization": f"Bearer {BEARER}"}


class RecordingCredentials(AmbientCredentials):
    def __init__(self, cluster: str) -> None:
        super().__init__(cluster)
        self.leased: list[str] = []

    def lease(self, plan: Any, cluster: str) -> Any:
        self.leased.append(cluster)
        return super().lease(plan, cluster)


def hung(cluster: str | None, fingerprint: str = "c0ffee0000000001") -> dict[str, Any]:
    doc = json.loads((demo_dir() / "events" / "01-vllm-hung.json").read_text())
    labels = doc["alerts"][0]["labels"]
    labels.pop("cluster", None)
    if cluster is not None:
        labels["cluster"] = cluster
    doc["alerts"][0]["fingerprint"] = fingerprint
    return doc


def writes(emu: Any) -> list[Any]:
    return [r for r in emu.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]


def send(app: Any, doc: dict[str, Any]) -> dict[str, Any]:
    resp = app.post("/webhooks/alertmanager", json=doc, headers=AUTH)
    assert resp.status_code == 200, resp.text
    (outcome,) = resp.json()["outcomes"]
    return outcome


def test_an_event_naming_another_cluster_is_refused_before_any_io(fleet, make_settings,
                                                                   serve_app):
    creds = RecordingCredentials("gpu-east")
    app = serve_app(make_settings(cluster="gpu-east"), credentials=creds)
    reads_before = len(fleet.requests)
    out = send(app, hung("payments-prod"))
    assert out["status"] == "rejected", out
    assert "cluster 'payments-prod' is not served here" in out["reasons"][0]
    assert creds.leased == []
    assert writes(fleet) == [] and len(fleet.requests) == reads_before


def test_the_configured_cluster_is_read_and_written_with_its_own_credentials(
        fleet, make_settings, serve_app):
    creds = RecordingCredentials("gpu-east")
    app = serve_app(make_settings(cluster="gpu-east"), credentials=creds)
    assert send(app, hung("gpu-east"))["status"] == "applied"
    assert send(app, hung(None, "c0ffee0000000002"))["status"] in ("applied", "duplicate")
    assert set(creds.leased) == {"gpu-east"}


def test_an_unnamed_local_cluster_never_leases_for_the_named_one(fleet, make_settings,
                                                                 serve_app):
    creds = RecordingCredentials("")
    app = serve_app(make_settings(), credentials=creds)
    send(app, hung("payments-prod"))
    assert "payments-prod" not in creds.leased


def test_distinct_cluster_names_make_no_new_clients(fleet, make_settings, serve_app):
    app = serve_app(make_settings(cluster="gpu-east"))
    for i in range(40):
        send(app, hung(f"cluster-{i}", f"{i:016x}"))
    access = app.pipeline.cluster
    assert set(access._facts) <= {"gpu-east"} and set(access._writers) <= {"gpu-east"}
    assert writes(fleet) == []


def test_the_access_refuses_clusters_it_was_not_configured_for(fleet, make_settings):
    import pytest

    from remediation.clients.kube import KubeAccess
    from remediation.errors import InvalidInput

    access = KubeAccess(make_settings().kube, clusters=("gpu-east",))
    try:
        with pytest.raises(InvalidInput, match="not configured"):
            access.facts("payments-prod")
        assert access._facts == {}
    finally:
        access.close()
