"""Optional tier: the same path against a REAL cluster when KUBECONFIG is set
(skipped otherwise). It creates a throw-away namespace with a zero-replica
Deployment (nothing is scheduled), delivers an Alertmanager alert through the
HTTP app with dry run off, asserts the rollout-restart annotation landed and
a Kubernetes Event was recorded, then deletes the namespace.

    KUBECONFIG=~/.kube/config make test   # or: pytest tests/test_real_cluster.py
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any
from collections.abc import Iterator

import pytest

from remediation.actions.base import RESTARTED_AT_ANNOTATION
from remediation.settings import HTTPSettings, KubeSettings, Secret, Settings

pytestmark = [
    pytest.mark.realcluster,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"),
                       reason="KUBECONFIG not set: no real cluster to test against"),
]


@pytest.fixture
def namespace() -> Iterator[tuple[Any, str]]:
    from kubernetes import client, config

    config.load_kube_config()
    api = client.ApiClient()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = f"remediation-e2e-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": ns}})
    apps.create_namespaced_deployment(ns, {
        "metadata": {"name": "vllm-e2e", "labels": {"app": "vllm-e2e"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "vllm-e2e"}},
                 "template": {"metadata": {"labels": {"app": "vllm-e2e"}},
                              "spec": {"containers": [{"name": "engine",
                                                       "image": "registry.k8s.io/pause:3.9"}]}}},
    })
    try:
        yield apps, ns
    finally:
        core.delete_namespace(ns)
        api.close()


def test_alert_restarts_a_real_deployment(namespace, serve_app):
    apps, ns = namespace
    settings = Settings(dry_run=False, http=HTTPSettings(alertmanager_bearer=Secret("t")),
                        kube=KubeSettings(kubeconfig=os.environ["KUBECONFIG"], timeout=10))
    app = serve_app(settings)
    alert = {"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "e2e",
             "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
             "externalURL": "http://alertmanager", "truncatedAlerts": 0,
             "alerts": [{"status": "firing", "labels": {
                 "alertname": "VLLMEngineHung", "namespace": ns, "deployment": "vllm-e2e"},
                 "annotations": {}, "startsAt": "2026-11-01T10:00:00Z",
                 "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
                 "fingerprint": uuid.uuid4().hex[:16]}]}
    resp = app.post("/webhooks/alertmanager", json=alert, headers={"Authorization": "Bearer t"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["outcomes"][0]["status"] == "applied"
    dep = apps.read_namespaced_deployment("vllm-e2e", ns)
    assert RESTARTED_AT_ANNOTATION in (dep.spec.template.metadata.annotations or {})
    from kubernetes import client

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        events = client.CoreV1Api().list_namespaced_event(ns).items
        if any(e.reason == "RemediationApplied" for e in events):
            break
        time.sleep(0.5)
    else:
        pytest.fail("no RemediationApplied Event recorded")
