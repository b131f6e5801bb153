"""The Kubernetes seam over real HTTP to the API emulator: the REST paths it
builds for every kind it touches, bodies sent exactly as given, and the error
mapping (a retry only where one can help; our own bugs surface as bugs)."""

from __future__ import annotations

import pytest
import urllib3

from remediation.clients.kube import KINDS, LiveFacts, KubeWriter, _map_error, rest_path
from remediation.errors import ActionFailed, DependencyUnavailable
from remediation.model import Step, freeze

from tests.plugins.kube import make_api_client

NS = "llm-serving"


@pytest.mark.parametrize("kind, namespace, name, sub, path", [
    ("Pod", NS, "p", "", "/api/v1/namespaces/llm-serving/pods/p"),
    ("Pod", None, "", "", "/api/v1/pods"),
    ("Pod", NS, "p", "eviction", "/api/v1/namespaces/llm-serving/pods/p/eviction"),
    ("Node", "", "gpu-node-1", "", "/api/v1/nodes/gpu-node-1"),
    ("Deployment", NS, "d", "scale", "/apis/apps/v1/namespaces/llm-serving/deployments/d/scale"),
    ("InferenceService", NS, "i", "",
     "/apis/serving.kserve.io/v1beta1/namespaces/llm-serving/inferenceservices/i"),
    ("Lease", "remediation", "a/b", "",
     "/apis/coordination.k8s.io/v1/namespaces/remediation/leases/a%2Fb"),  # never a new segment
])
def test_rest_paths(kind, namespace, name, sub, path):
    assert rest_path(kind, namespace, name, sub) == path


def test_every_kind_reads_back_from_the_emulator(fleet):
    facts = LiveFacts(make_api_client(fleet.url), 5.0)
    try:
        for kind in KINDS:
            if kind in ("Event", "Lease", "InferenceService", "Namespace"):
                continue
            items = facts.list(kind)
            assert items, kind
            first = items[0]
            meta = first["metadata"]
            got = facts.get(kind, meta.get("namespace", ""), meta["name"])
            assert got is not None and got["metadata"]["uid"] == meta["uid"], kind
        assert facts.get("Pod", NS, "no-such-pod") is None
        # a kind we do not model (a pod's owner may be a Job or a RayCluster)
        assert facts.get("RayCluster", NS, "r") is None and facts.list("Job") == []
        on_node = facts.list("Pod", None, node="gpu-node-5")
        assert on_node and all(p["spec"]["nodeName"] == "gpu-node-5" for p in on_node)
    finally:
        facts.close()


def test_writes_reach_the_api_as_given_and_dry_run_changes_nothing(fleet):
    writer = KubeWriter(make_api_client(fleet.url), 5.0, "test")
    patch = Step("patch", "Node", "", "gpu-node-1", "why",
                 freeze({"spec": {"unschedulable": True}}), patch_type="merge")
    try:
        assert writer.apply(patch, dry_run=True).detail == "dry run accepted"
        assert not fleet.get("nodes", None, "gpu-node-1")["spec"].get("unschedulable")
        assert writer.apply(patch, dry_run=False).ok
        assert fleet.get("nodes", None, "gpu-node-1")["spec"]["unschedulable"] is True
        (req,) = [r for r in fleet.requests if r.method == "PATCH" and not r.query]
        assert req.content_type == "application/merge-patch+json"
        gone = Step("evict", "Pod", NS, "no-such-pod", "why", freeze({}))
        assert writer.apply(gone, dry_run=False).detail == "already gone"
    finally:
        writer.close()


def test_error_mapping():
    from kubernetes.client.exceptions import ApiException

    throttled = ApiException(status=429, reason="Too Many Requests")
    throttled.headers = {"Retry-After": "7"}
    mapped = _map_error(throttled, "patch x")
    assert isinstance(mapped, DependencyUnavailable) and mapped.delay == 7.0
    assert isinstance(_map_error(ApiException(status=403, reason="Forbidden"), "x"),
                      ActionFailed)
    assert isinstance(_map_error(urllib3.exceptions.ReadTimeoutError(None, "/", "t"), "x"),
                      DependencyUnavailable)
    assert isinstance(_map_error(ConnectionRefusedError(), "x"), DependencyUnavailable)
    # did a write maybe land without an answer? (a relative step keeps its claim)
    assert mapped.unanswered is False  # 429: refused
    assert _map_error(ApiException(status=504, reason="Timeout"), "x").unanswered is True
    assert _map_error(urllib3.exceptions.ReadTimeoutError(None, "/", "t"), "x").unanswered
    assert not _map_error(ConnectionRefusedError(), "x").unanswered
    never_sent = urllib3.exceptions.MaxRetryError(
        None, "/", urllib3.exceptions.NewConnectionError(None, "refused"))
    assert not _map_error(never_sent, "x").unanswered
    bug = TypeError("unhashable")
    assert _map_error(bug, "x") is bug  # a bug is not "the API is down"
