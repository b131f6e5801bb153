"""The Kubernetes API emulator, exercised through the real kubernetes client over HTTP."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.kube_emulator import KubeEmulator, TokenScope, strategic_merge_patch

NS = "llm-serving"
DEMO = Path(__file__).resolve().parents[1] / "functions/remediation/defaults/demo/cluster.yaml"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


# ---------------------------------------------------------------- helpers


def raw(response: Any) -> dict[str, Any]:
    """Parse a ``_preload_content=False`` response."""
    return json.loads(response.data)


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    body = json.loads(exc.value.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == exc.value.status
    assert exc.value.headers["Content-Type"] == "application/json"
    return body


def ready_pod(
    name: str,
    labels: dict[str, str],
    owner: dict[str, Any] | None = None,
    *,
    node: str = "gpu-node-1",
    ready: bool = True,
    phase: str = "Running",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "vllm",
                    "image": "vllm/vllm-openai:v0.6.3",
                    "resources": {"requests": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def deployment_with_pods(
    emu: KubeEmulator, name: str = "vllm", replicas: int = 3, ready: int | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    labels = {"app": name}
    dep = emu.add(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "vllm", "image": "vllm:1"}]},
                },
            },
        }
    )
    rs = emu.add(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-6d4f8b9c7",
                "namespace": NS,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": name,
                        "uid": dep["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}},
        }
    )
    ready = replicas if ready is None else ready
    pods = [
        emu.add(ready_pod(f"{name}-6d4f8b9c7-{i}", labels, rs, ready=i < ready))
        for i in range(replicas)
    ]
    return dep, pods


def pdb(name: str, selector: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"matchLabels": selector}, **spec},
    }


def eviction(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": NS},
        "deleteOptions": {"gracePeriodSeconds": 30},
    }


@pytest.fixture
def core(kube_api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api_client)


@pytest.fixture
def apps(kube_api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(kube_api_client)


# ---------------------------------------------------------------- discovery


def test_version_and_discovery_list_the_registered_resources(kube_api_client):
    assert client.VersionApi(kube_api_client).get_code().git_version.startswith("v1.")
    core_resources = {
        r.name: r for r in client.CoreV1Api(kube_api_client).get_api_resources().resources
    }
    assert core_resources["pods"].namespaced and not core_resources["nodes"].namespaced
    assert core_resources["pods/eviction"].kind == "Eviction"
    groups = {g.name: g for g in client.ApisApi(kube_api_client).get_api_versions().groups}
    assert {"apps", "policy", "coordination.k8s.io", "events.k8s.io", "serving.kserve.io"} <= set(
        groups
    )
    apps_resources = {
        r.name for r in client.AppsV1Api(kube_api_client).get_api_resources().resources
    }
    assert {
        "deployments",
        "deployments/scale",
        "statefulsets/scale",
        "daemonsets",
    } <= apps_resources


# ---------------------------------------------------------------- create / get / list


def test_create_returns_201_and_fills_server_side_metadata(kube_emulator, core):
    body = {
        "metadata": {"generateName": "vllm-", "labels": {"app": "vllm"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running"},
    }
    created, code, _ = core.create_namespaced_pod_with_http_info(NS, body)
    assert code == 201
    meta = created.metadata
    assert meta.name.startswith("vllm-") and len(meta.name) == len("vllm-") + 5
    assert meta.uid and meta.creation_timestamp and meta.generation == 1 and meta.namespace == NS
    assert int(meta.resource_version) == kube_emulator.resource_version
    stored = kube_emulator.get("pods", NS, meta.name)
    assert stored["status"] == {"phase": "Pending", "qosClass": "BestEffort"}  # user status dropped

    second = core.create_namespaced_pod(NS, body)
    assert int(second.metadata.resource_version) > int(meta.resource_version)

    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod(NS, {"metadata": {"name": meta.name}, "spec": body["spec"]})
    status = status_of(exc)
    assert (exc.value.status, status["reason"]) == (409, "AlreadyExists")
    assert status["message"] == f'pods "{meta.name}" already exists'
    assert status["details"] == {"name": meta.name, "group": "", "kind": "pods"}


def test_create_rejects_bad_names_and_namespace_mismatch(core):
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "Bad_Name"}})
    assert (exc.value.status, status_of(exc)["reason"]) == (422, "Invalid")
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "ok", "namespace": "other"}})
    assert (exc.value.status, status_of(exc)["reason"]) == (400, "BadRequest")


def test_get_missing_is_a_404_status(core):
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod("nope", NS)
    status = status_of(exc)
    assert (exc.value.status, status["reason"], status["message"]) == (
        404,
        "NotFound",
        'pods "nope" not found',
    )


def test_list_shapes_and_label_selectors(kube_emulator, core):
    for name, labels in [
        ("a", {"app": "vllm", "tier": "gpu"}),
        ("b", {"app": "vllm"}),
        ("c", {"app": "tgi", "tier": "cpu"}),
    ]:
        kube_emulator.add(ready_pod(name, labels))
    kube_emulator.add(
        {
            **ready_pod("d", {"app": "vllm"}),
            "metadata": {"name": "d", "namespace": "other", "labels": {"app": "vllm"}},
        }
    )

    doc = raw(core.list_namespaced_pod(NS, _preload_content=False))
    assert doc["kind"] == "PodList" and doc["apiVersion"] == "v1"
    assert doc["metadata"]["resourceVersion"] == str(kube_emulator.resource_version)
    assert [i["metadata"]["name"] for i in doc["items"]] == ["a", "b", "c"]
    assert "kind" not in doc["items"][0]  # like the real API for built-in types

    def names(selector: str, namespace: str | None = NS) -> list[str]:
        if namespace is None:
            pods = core.list_pod_for_all_namespaces(label_selector=selector)
        else:
            pods = core.list_namespaced_pod(namespace, label_selector=selector)
        return sorted(p.metadata.name for p in pods.items)

    assert names("app=vllm") == ["a", "b"]
    assert names("app==vllm,tier=gpu") == ["a"]
    assert names("app!=vllm") == ["c"]
    assert names("tier in (gpu, cpu)") == ["a", "c"]
    assert names("tier notin (gpu)") == ["b", "c"]
    assert names("tier") == ["a", "c"]
    assert names("!tier") == ["b"]
    assert names("app=vllm", None) == ["a", "b", "d"]
    assert [
        p["metadata"]["name"] for p in kube_emulator.list("Pod", label_selector="app=vllm")
    ] == ["a", "b", "d"]


def test_field_selectors(kube_emulator, core):
    kube_emulator.add(ready_pod("on-1", {}, node="gpu-node-1"))
    kube_emulator.add(ready_pod("on-2", {}, node="gpu-node-2"))
    kube_emulator.add(ready_pod("done", {}, node="gpu-node-1", phase="Succeeded"))
    kube_emulator.add(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "unscheduled", "namespace": NS},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending"},
        }
    )

    def names(selector: str) -> list[str]:
        return sorted(
            p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector=selector).items
        )

    assert names("spec.nodeName=gpu-node-1") == ["done", "on-1"]
    assert names("spec.nodeName=gpu-node-1,status.phase!=Succeeded") == ["on-1"]
    assert names("spec.nodeName==gpu-node-2") == ["on-2"]
    assert names("spec.nodeName=") == ["unscheduled"]
    assert names("metadata.name=on-2,metadata.namespace=llm-serving") == ["on-2"]
    assert names("status.phase=Pending") == ["unscheduled"]
    with pytest.raises(ApiException) as exc:
        core.list_pod_for_all_namespaces(field_selector="spec.bogus=1")
    assert exc.value.status == 400 and "field label not supported" in status_of(exc)["message"]


def test_list_pagination_with_limit_and_continue(kube_emulator, core):
    for i in range(5):
        kube_emulator.add(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i}", "namespace": NS},
            }
        )
    first = core.list_namespaced_config_map(NS, limit=2)
    assert [c.metadata.name for c in first.items] == ["cm-0", "cm-1"]
    assert first.metadata.remaining_item_count == 3
    rest = core.list_namespaced_config_map(NS, limit=10, _continue=first.metadata._continue)
    assert [c.metadata.name for c in rest.items] == ["cm-2", "cm-3", "cm-4"]


# ---------------------------------------------------------------- patch


def test_rollout_restart_strategic_merge_patch_bumps_generation(kube_emulator, apps):
    dep, _ = deployment_with_pods(kube_emulator, replicas=2)
    patch = {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2026-11-01T10:07:03Z"}}}}
    }
    resp = apps.patch_namespaced_deployment("vllm", NS, patch, _preload_content=False)
    assert resp.status == 200
    body = raw(resp)
    assert (
        body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == "2026-11-01T10:07:03Z"
    )
    stored = kube_emulator.get("deployments", NS, "vllm")
    assert stored["metadata"]["generation"] == dep["metadata"]["generation"] + 1
    assert int(stored["metadata"]["resourceVersion"]) > int(dep["metadata"]["resourceVersion"])
    assert stored["spec"]["template"]["metadata"]["labels"] == {"app": "vllm"}  # maps merge
    assert kube_emulator.requests[-1].content_type == "application/strategic-merge-patch+json"

    # the same patch again is a no-op: Kubernetes keeps resourceVersion and generation
    apps.patch_namespaced_deployment("vllm", NS, patch)
    again = kube_emulator.get("deployments", NS, "vllm")
    assert again["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert again["metadata"]["generation"] == stored["metadata"]["generation"]


def test_strategic_merge_list_semantics(kube_emulator, apps):
    kube_emulator.add(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "app:1",
                                "args": ["--a"],
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            },
                            {"name": "sidecar", "image": "side:1"},
                        ],
                        "tolerations": [{"key": "x", "operator": "Exists"}],
                    },
                },
            },
        }
    )
    apps.patch_namespaced_deployment(
        "web",
        NS,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "app:2",
                                "args": ["--b"],
                                "env": [
                                    {"name": "B", "$patch": "delete"},
                                    {"name": "C", "value": "3"},
                                ],
                            },
                            {"name": "sidecar", "$patch": "delete"},
                        ],
                        "tolerations": [{"key": "y", "operator": "Exists"}],
                    }
                }
            }
        },
    )
    spec = kube_emulator.get("deployments", NS, "web")["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["app"]
    app = spec["containers"][0]
    assert app["image"] == "app:2" and app["args"] == ["--b"]  # plain lists are replaced
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]
    assert spec["tolerations"] == [{"key": "y", "operator": "Exists"}]

    apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "1"}}})
    apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": None}}})
    assert "x" not in (kube_emulator.get("deployments", NS, "web")["metadata"].get("labels") or {})


def test_strategic_merge_by_uid_type_and_port():
    original = {
        "metadata": {"ownerReferences": [{"uid": "1", "name": "a"}], "finalizers": ["f1"]},
        "status": {
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "X", "status": "True"}]
        },
        "spec": {"ports": [{"port": 80, "name": "http"}]},
    }
    patched = strategic_merge_patch(
        original,
        {
            "metadata": {"ownerReferences": [{"uid": "2", "name": "b"}], "finalizers": ["f2"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    assert [r["uid"] for r in patched["metadata"]["ownerReferences"]] == ["1", "2"]
    assert patched["metadata"]["finalizers"] == ["f1", "f2"]
    assert patched["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "X", "status": "True"},
    ]
    assert patched["spec"]["ports"] == [{"port": 80, "name": "http", "targetPort": 8080}]


def test_merge_patch_and_json_patch(kube_emulator, kube_api_client):
    objs = client.CustomObjectsApi(kube_api_client)
    kube_emulator.add(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "llama-70b", "namespace": NS, "annotations": {"a": "1", "b": "2"}},
            "spec": {"predictor": {"minReplicas": 1, "model": {"modelFormat": {"name": "vllm"}}}},
        }
    )
    args = ("serving.kserve.io", "v1beta1", NS, "inferenceservices", "llama-70b")

    # custom resources refuse strategic merge (like the real API)
    with pytest.raises(ApiException) as exc:
        objs.patch_namespaced_custom_object(
            *args,
            {"spec": {"predictor": {"minReplicas": 2}}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert (exc.value.status, status_of(exc)["reason"]) == (415, "UnsupportedMediaType")

    # CustomObjectsApi sends a dict as a JSON merge patch by default
    objs.patch_namespaced_custom_object(
        *args, {"metadata": {"annotations": {"a": None}}, "spec": {"predictor": {"minReplicas": 2}}}
    )
    assert kube_emulator.requests[-1].content_type == "application/merge-patch+json"
    isvc = kube_emulator.get("inferenceservices", NS, "llama-70b")
    assert isvc["metadata"]["annotations"] == {"b": "2"}
    assert isvc["spec"]["predictor"] == {
        "minReplicas": 2,
        "model": {"modelFormat": {"name": "vllm"}},
    }
    assert isvc["metadata"]["generation"] == 2

    objs.patch_namespaced_custom_object(
        *args,
        [
            {"op": "test", "path": "/spec/predictor/minReplicas", "value": 2},
            {"op": "replace", "path": "/spec/predictor/minReplicas", "value": 3},
            {"op": "add", "path": "/metadata/labels", "value": {"owner": "remediation"}},
            {"op": "remove", "path": "/metadata/annotations/b"},
        ],
        _content_type="application/json-patch+json",
    )
    isvc = kube_emulator.get("inferenceservices", NS, "llama-70b")
    assert isvc["spec"]["predictor"]["minReplicas"] == 3 and isvc["metadata"]["labels"] == {
        "owner": "remediation"
    }
    assert isvc["metadata"]["annotations"] == {}

    before = isvc["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as exc:
        objs.patch_namespaced_custom_object(
            *args,
            [
                {"op": "test", "path": "/spec/predictor/minReplicas", "value": 99},
                {"op": "replace", "path": "/spec/predictor/minReplicas", "value": 0},
            ],
            _content_type="application/json-patch+json",
        )
    assert exc.value.status == 422
    assert (
        kube_emulator.get("inferenceservices", NS, "llama-70b")["metadata"]["resourceVersion"]
        == before
    )


def test_patch_with_stale_resource_version_conflicts(kube_emulator, core):
    kube_emulator.add(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": NS}}
    )
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_config_map(
            "c", NS, {"metadata": {"resourceVersion": "1"}, "data": {"k": "v"}}
        )
    assert (exc.value.status, status_of(exc)["reason"]) == (409, "Conflict")


def test_pod_spec_is_immutable_except_images(kube_emulator, core):
    kube_emulator.add(ready_pod("p", {"app": "x"}))
    core.patch_namespaced_pod(
        "p", NS, {"spec": {"containers": [{"name": "vllm", "image": "vllm:2"}]}}
    )
    assert kube_emulator.get("pods", NS, "p")["spec"]["containers"][0]["image"] == "vllm:2"
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_pod("p", NS, {"spec": {"nodeName": "elsewhere"}})
    assert (exc.value.status, status_of(exc)["reason"]) == (422, "Invalid")


# ---------------------------------------------------------------- replace / status / scale


def test_replace_with_stale_resource_version_is_a_conflict(kube_emulator, apps):
    deployment_with_pods(kube_emulator, "web", replicas=1)
    stale = apps.read_namespaced_deployment("web", NS)
    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 2}})  # someone else writes
    stale.spec.replicas = 5
    with pytest.raises(ApiException) as exc:
        apps.replace_namespaced_deployment("web", NS, stale)
    status = status_of(exc)
    assert (exc.value.status, status["reason"]) == (409, "Conflict")
    assert status["message"] == (
        'Operation cannot be fulfilled on deployments.apps "web": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    assert kube_emulator.get("deployments", NS, "web")["spec"]["replicas"] == 2

    fresh = apps.read_namespaced_deployment("web", NS)
    fresh.spec.replicas = 5
    replaced = apps.replace_namespaced_deployment("web", NS, fresh)
    assert (
        replaced.spec.replicas == 5
        and replaced.metadata.generation == fresh.metadata.generation + 1
    )


def test_status_subresource_only_touches_status(kube_emulator, apps):
    deployment_with_pods(kube_emulator, "web", replicas=1)
    apps.patch_namespaced_deployment_status(
        "web", NS, {"spec": {"replicas": 9}, "status": {"readyReplicas": 1, "replicas": 1}}
    )
    stored = kube_emulator.get("deployments", NS, "web")
    assert (
        stored["status"] == {"readyReplicas": 1, "replicas": 1} and stored["spec"]["replicas"] == 1
    )
    apps.patch_namespaced_deployment("web", NS, {"status": {"readyReplicas": 0}})
    assert kube_emulator.get("deployments", NS, "web")["status"]["readyReplicas"] == 1
    assert apps.read_namespaced_deployment_status("web", NS).status.ready_replicas == 1


def test_scale_subresource(kube_emulator, apps):
    deployment_with_pods(kube_emulator, "web", replicas=2)
    scale = apps.read_namespaced_deployment_scale("web", NS)
    assert (scale.spec.replicas, scale.status.selector) == (2, "app=web")
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 4}})
    stored = kube_emulator.get("deployments", NS, "web")
    assert stored["spec"]["replicas"] == 4 and stored["metadata"]["generation"] == 2

    scale = apps.read_namespaced_deployment_scale("web", NS)
    scale.spec.replicas = 0
    assert apps.replace_namespaced_deployment_scale("web", NS, scale).spec.replicas == 0
    scale.spec.replicas = 7  # stale resourceVersion now
    with pytest.raises(ApiException) as exc:
        apps.replace_namespaced_deployment_scale("web", NS, scale)
    assert exc.value.status == 409

    kube_emulator.add(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "tp", "namespace": NS},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "tp"}}},
        }
    )
    apps.patch_namespaced_stateful_set_scale("tp", NS, {"spec": {"replicas": 1}})
    assert kube_emulator.get("statefulsets", NS, "tp")["spec"]["replicas"] == 1


# ---------------------------------------------------------------- delete / dry run


def test_delete_returns_the_object_and_honours_preconditions(kube_emulator, core):
    pod = kube_emulator.add(ready_pod("p", {"app": "x"}))
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_pod(
            "p",
            NS,
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="someone-else")),
        )
    assert (exc.value.status, status_of(exc)["reason"]) == (409, "Conflict")
    assert "Precondition failed: UID in precondition: someone-else" in status_of(exc)["message"]

    resp = core.delete_namespaced_pod(
        "p",
        NS,
        body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=pod["metadata"]["uid"])
        ),
        _preload_content=False,
    )
    assert resp.status == 200 and raw(resp)["metadata"]["uid"] == pod["metadata"]["uid"]
    assert kube_emulator.get("pods", NS, "p") is None
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_pod("p", NS)
    assert (exc.value.status, status_of(exc)["reason"]) == (404, "NotFound")


def test_finalizers_keep_a_deleted_object_until_removed(kube_emulator, core):
    kube_emulator.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": NS, "finalizers": ["example.com/hold"]},
        }
    )
    resp = core.delete_namespaced_config_map("c", NS, _preload_content=False)
    assert resp.status == 202 and raw(resp)["metadata"]["deletionTimestamp"]
    assert kube_emulator.get("configmaps", NS, "c")["metadata"]["deletionTimestamp"]
    core.patch_namespaced_config_map("c", NS, [{"op": "remove", "path": "/metadata/finalizers"}])
    assert kube_emulator.get("configmaps", NS, "c") is None


def test_dry_run_never_persists(kube_emulator, core, apps):
    deployment_with_pods(kube_emulator, "web", replicas=1)
    rv = kube_emulator.resource_version
    created, code, _ = core.create_namespaced_config_map_with_http_info(
        NS, {"metadata": {"name": "c"}, "data": {"k": "v"}}, dry_run="All"
    )
    assert code == 201 and created.metadata.uid
    patched = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 9}}, dry_run="All")
    assert patched.spec.replicas == 9
    core.delete_namespaced_pod("web-6d4f8b9c7-0", NS, dry_run="All")
    core.create_namespaced_pod_eviction(
        "web-6d4f8b9c7-0", NS, eviction("web-6d4f8b9c7-0"), dry_run="All"
    )
    assert kube_emulator.get("configmaps", NS, "c") is None
    assert kube_emulator.get("deployments", NS, "web")["spec"]["replicas"] == 1
    assert kube_emulator.get("pods", NS, "web-6d4f8b9c7-0") is not None
    assert kube_emulator.resource_version == rv


# ---------------------------------------------------------------- eviction


def test_eviction_allowed_then_blocked_by_the_budget(kube_emulator, core):
    _, pods = deployment_with_pods(kube_emulator, replicas=3)
    kube_emulator.add(pdb("vllm-pdb", {"app": "vllm"}, maxUnavailable=1))

    resp = core.create_namespaced_pod_eviction(
        pods[0]["metadata"]["name"],
        NS,
        eviction(pods[0]["metadata"]["name"]),
        _preload_content=False,
    )
    assert resp.status == 201
    assert raw(resp) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 201,
    }
    assert kube_emulator.get("pods", NS, pods[0]["metadata"]["name"]) is None
    status = kube_emulator.get("pdb", NS, "vllm-pdb")["status"]
    assert {
        k: status[k]
        for k in ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods")
    } == {"disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2, "expectedPods": 3}

    victim = pods[1]["metadata"]["name"]
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod_eviction(victim, NS, eviction(victim))
    body = status_of(exc)
    assert exc.value.status == 429 and type(exc.value) is ApiException
    assert (body["reason"], body["message"]) == (
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    )
    assert body["details"]["causes"] == [
        {
            "reason": "DisruptionBudget",
            "message": "The disruption budget vllm-pdb needs 2 healthy pods and has 2 currently",
        }
    ]
    assert kube_emulator.get("pods", NS, victim) is not None


@pytest.mark.parametrize(
    ("spec", "ready", "allowed", "desired", "expected"),
    [
        ({"minAvailable": "50%"}, 4, 1, 3, 5),  # ceil(2.5) = 3 needed of 5 expected
        ({"maxUnavailable": "30%"}, 4, 1, 3, 5),  # ceil(1.5) = 2 unavailable -> 3 needed
        ({"minAvailable": 4}, 4, 0, 4, 5),  # int minAvailable counts matched pods
        ({"maxUnavailable": 0}, 5, 0, 5, 5),
    ],
)
def test_budget_arithmetic(kube_emulator, spec, ready, allowed, desired, expected):
    deployment_with_pods(kube_emulator, replicas=5, ready=ready)
    kube_emulator.add(pdb("b", {"app": "vllm"}, **spec))
    status = kube_emulator.compute_pdb_status(NS, "b")
    assert kube_emulator.sync_pdbs()[0]["status"]["disruptionsAllowed"] == allowed
    assert (status["disruptionsAllowed"], status["desiredHealthy"], status["expectedPods"]) == (
        allowed,
        desired,
        expected,
    )


def test_expected_pods_follow_the_deployment_not_the_pod_count(kube_emulator, core):
    _, pods = deployment_with_pods(kube_emulator, replicas=2)
    kube_emulator.patch(
        "deployments", NS, "vllm", {"spec": {"replicas": 4}}
    )  # two pods still missing
    kube_emulator.add(pdb("b", {"app": "vllm"}, maxUnavailable=1))
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod_eviction(
            pods[0]["metadata"]["name"], NS, eviction(pods[0]["metadata"]["name"])
        )
    assert exc.value.status == 429
    assert status_of(exc)["details"]["causes"][0]["message"] == (
        "The disruption budget b needs 3 healthy pods and has 2 currently"
    )


def test_unready_pod_is_evictable_while_the_budget_is_healthy(kube_emulator, core):
    _, pods = deployment_with_pods(kube_emulator, replicas=3, ready=2)
    kube_emulator.add(pdb("b", {"app": "vllm"}, minAvailable=2))
    unready = pods[2]["metadata"]["name"]
    core.create_namespaced_pod_eviction(unready, NS, eviction(unready))
    assert kube_emulator.get("pods", NS, unready) is None


def test_eviction_with_two_budgets_is_a_500_and_missing_pod_a_404(kube_emulator, core):
    _, pods = deployment_with_pods(kube_emulator, replicas=3)
    kube_emulator.add(pdb("a", {"app": "vllm"}, maxUnavailable=1))
    kube_emulator.add(pdb("b", {"app": "vllm"}, minAvailable=1))
    name = pods[0]["metadata"]["name"]
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod_eviction(name, NS, eviction(name))
    assert exc.value.status == 500
    assert status_of(exc)["message"] == (
        "This pod has more than one PodDisruptionBudget, which the eviction "
        "subresource does not support."
    )
    assert kube_emulator.get("pods", NS, name) is not None

    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod_eviction("gone", NS, eviction("gone"))
    assert (exc.value.status, status_of(exc)["message"]) == (404, 'pods "gone" not found')


def test_eviction_without_budget_deletes_and_typed_response_parses(kube_emulator, core):
    kube_emulator.add(ready_pod("solo", {"app": "solo"}))
    result = core.create_namespaced_pod_eviction(
        "solo",
        NS,
        client.V1Eviction(
            metadata=client.V1ObjectMeta(name="solo", namespace=NS),
            delete_options=client.V1DeleteOptions(grace_period_seconds=30),
        ),
    )
    assert result.kind == "Status"
    assert kube_emulator.get("pods", NS, "solo") is None


# ---------------------------------------------------------------- other resource types


def test_leases_events_nodes_and_namespaces(kube_emulator, kube_api_client, core):
    coordination = client.CoordinationV1Api(kube_api_client)
    lease = {
        "metadata": {"name": "remediation-claim-abc"},
        "spec": {"holderIdentity": "pod-1", "leaseDurationSeconds": 60},
    }
    coordination.create_namespaced_lease(NS, lease)
    with pytest.raises(ApiException) as exc:  # a deterministic name is an atomic claim
        coordination.create_namespaced_lease(NS, lease)
    assert status_of(exc)["reason"] == "AlreadyExists"

    core.create_namespaced_event(
        NS,
        {
            "metadata": {"generateName": "vllm."},
            "reason": "Remediated",
            "message": "restarted",
            "type": "Normal",
            "involvedObject": {"kind": "Deployment", "name": "vllm", "namespace": NS},
        },
    )
    client.EventsV1Api(kube_api_client).create_namespaced_event(
        NS,
        {
            "metadata": {"name": "e1"},
            "reason": "Remediated",
            "action": "Restart",
            "type": "Normal",
            "eventTime": "2026-11-01T10:07:03.250000Z",
            "reportingController": "remediation",
            "reportingInstance": "r-1",
            "regarding": {"kind": "Deployment", "name": "vllm", "namespace": NS},
        },
    )
    assert [e["reason"] for e in kube_emulator.list("events", NS)] == ["Remediated"]
    found = core.list_namespaced_event(
        NS, field_selector="involvedObject.name=vllm,reason=Remediated"
    )
    assert len(found.items) == 1
    assert len(kube_emulator.list("events.events.k8s.io", NS)) == 1

    kube_emulator.load(DEMO)
    core.patch_node("gpu-node-1", {"spec": {"unschedulable": True}})
    assert kube_emulator.get("nodes", "gpu-node-1")["spec"]["unschedulable"] is True
    assert [
        n.metadata.name for n in core.list_node(field_selector="spec.unschedulable=true").items
    ] == ["gpu-node-1", "gpu-node-6", "gpu-node-7"]  # 6 and 7 come cordoned in the demo fleet
    assert (
        kube_emulator.get("nodes", "gpu-node-1")["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    )

    core.delete_namespace(NS)
    assert kube_emulator.list("pods", NS) == [] and kube_emulator.list("leases", NS) == []


def test_micro_times_that_do_not_parse_are_a_400_like_the_real_decoder(
    kube_emulator, kube_api_client
):
    """MicroTime needs exactly six fraction digits. The typed client (37.x)
    turns a dict body into a model and writes ``datetime.isoformat()``, which
    drops a zero fraction: such a Lease is refused, as a real API server
    refuses it (the ledger sends its Lease bodies as plain JSON for this)."""
    coordination = client.CoordinationV1Api(kube_api_client)

    def lease(name: str, when: str) -> dict[str, Any]:
        return {"metadata": {"name": name},
                "spec": {"holderIdentity": "h", "acquireTime": when, "renewTime": when}}

    with pytest.raises(ApiException) as exc:
        coordination.create_namespaced_lease(NS, lease("zero", "2026-11-01T10:07:03.000000Z"))
    assert exc.value.status == 400 and status_of(exc)["reason"] == "BadRequest"
    assert '"2026-11-01T10:07:03+00:00"' in status_of(exc)["message"]
    http = urllib3.PoolManager()
    for when, code in [("2026-11-01T10:07:03Z", 400), ("2026-11-01T10:07:03.5Z", 400),
                       ("yesterday", 400), ("2026-11-01T10:07:03.000000Z", 201),
                       ("2026-11-01T10:07:03.000000+01:00", 201)]:
        resp = http.request(
            "POST", f"{kube_emulator.url}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases",
            body=json.dumps(lease(f"l{len(when)}-{code}", when)),
            headers={"Content-Type": "application/json"})
        assert resp.status == code, (when, resp.data)
    got = kube_emulator.get("leases", NS, "l27-201")
    assert got["spec"]["acquireTime"] == "2026-11-01T10:07:03.000000Z"  # stored as sent


# ---------------------------------------------------------------- auth


def test_tokens_unauthorized_and_forbidden(kube_emulator, kube_client_factory):
    kube_emulator.add(ready_pod("p", {"app": "x"}))
    kube_emulator.add({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    kube_emulator.require_tokens(
        {
            "admin": None,
            "scoped": TokenScope(
                namespaces=frozenset({NS}), user="system:serviceaccount:llm-serving:restarter"
            ),
            "readonly": TokenScope(verbs=frozenset({"get", "list"})),
        }
    )

    anonymous = client.CoreV1Api(kube_client_factory())
    with pytest.raises(ApiException) as exc:
        anonymous.read_namespaced_pod("p", NS)
    assert (exc.value.status, status_of(exc)["reason"]) == (401, "Unauthorized")
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(kube_client_factory("wrong")).list_node()
    assert exc.value.status == 401

    scoped = client.CoreV1Api(kube_client_factory("scoped"))
    scoped.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"touched": "yes"}}})
    assert kube_emulator.get("pods", NS, "p")["metadata"]["labels"]["touched"] == "yes"
    with pytest.raises(ApiException) as exc:
        scoped.patch_namespaced_pod("p", "kube-system", {"metadata": {"labels": {"x": "y"}}})
    status = status_of(exc)
    assert (exc.value.status, status["reason"]) == (403, "Forbidden")
    assert status["message"] == (
        'pods "p" is forbidden: User "system:serviceaccount:llm-serving:restarter" '
        'cannot patch resource "pods" in API group "" in the namespace "kube-system"'
    )
    with pytest.raises(ApiException) as exc:
        scoped.patch_node("n1", {"spec": {"unschedulable": True}})
    assert exc.value.status == 403 and "at the cluster scope" in status_of(exc)["message"]

    readonly = client.CoreV1Api(kube_client_factory("readonly"))
    assert readonly.read_node("n1").metadata.name == "n1"
    with pytest.raises(ApiException) as exc:
        readonly.create_namespaced_pod_eviction("p", NS, eviction("p"))
    assert 'cannot create resource "pods/eviction"' in status_of(exc)["message"]

    client.CoreV1Api(kube_client_factory("admin")).patch_node(
        "n1", {"spec": {"unschedulable": True}}
    )
    assert kube_emulator.get("nodes", "n1")["spec"]["unschedulable"] is True
    tokens = [r.token for r in kube_emulator.requests]
    assert tokens[:2] == [None, "wrong"] and "admin" in tokens


# ---------------------------------------------------------------- faults, watch, hooks


def test_fail_injects_errors_before_touching_state(kube_emulator, core):
    kube_emulator.add(ready_pod("p", {"app": "x"}))
    kube_emulator.fail(status=500, times=1, method="PATCH", path_contains="/pods/p")
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"a": "b"}}})
    assert (exc.value.status, status_of(exc)["reason"]) == (500, "InternalError")
    assert "a" not in kube_emulator.get("pods", NS, "p")["metadata"]["labels"]
    core.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"a": "b"}}})  # only once
    assert kube_emulator.get("pods", NS, "p")["metadata"]["labels"]["a"] == "b"

    kube_emulator.fail(status=429, times=None, method="POST", retry_after=3)
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod_eviction("p", NS, eviction("p"))
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "3"
    assert status_of(exc)["details"]["retryAfterSeconds"] == 3
    kube_emulator.clear_faults()
    core.create_namespaced_pod_eviction("p", NS, eviction("p"))
    assert [r.status for r in kube_emulator.requests if r.method in ("PATCH", "POST")] == [
        500,
        200,
        429,
        201,
    ]


def test_urllib3_retries_a_get_answered_429_with_retry_after(kube_emulator, core):
    # Worth knowing: the kubernetes client's urllib3 pool retries idempotent
    # requests that get 413/429/503 with a Retry-After header, transparently.
    kube_emulator.add(ready_pod("p", {"app": "x"}))
    kube_emulator.fail(status=429, times=1, method="GET", retry_after=0)
    assert core.read_namespaced_pod("p", NS).metadata.name == "p"
    assert [r.status for r in kube_emulator.requests] == [429, 200]


def test_delay_lets_clients_time_out_and_the_write_still_lands(kube_emulator, core):
    kube_emulator.add(ready_pod("p", {"app": "x"}))
    kube_emulator.delay(0.6, times=1, method="PATCH")
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        core.patch_namespaced_pod(
            "p", NS, {"metadata": {"labels": {"late": "yes"}}}, _request_timeout=0.2
        )
    deadline = time.monotonic() + 3
    while kube_emulator.get("pods", NS, "p")["metadata"]["labels"].get("late") != "yes":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_watch_streams_changes(kube_emulator, core):
    kube_emulator.add(ready_pod("p", {"app": "x"}))
    kube_emulator.add(ready_pod("q", {"app": "y"}))

    def later() -> None:
        time.sleep(0.2)
        core.delete_namespaced_pod("p", NS)

    threading.Thread(target=later, daemon=True).start()
    seen = []
    for event in watch.Watch().stream(
        core.list_namespaced_pod, NS, label_selector="app=x", timeout_seconds=2
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            break
    assert seen == [("ADDED", "p"), ("DELETED", "p")]


def test_write_hooks_play_a_controller(kube_emulator, apps):
    deployment_with_pods(kube_emulator, "web", replicas=1)

    def observe(
        event: str, obj: dict[str, Any], old: dict[str, Any] | None, emu: KubeEmulator
    ) -> None:
        if event == "MODIFIED" and obj["kind"] == "Deployment":
            emu.patch(
                "deployments",
                obj["metadata"]["namespace"],
                obj["metadata"]["name"],
                {"status": {"observedGeneration": obj["metadata"]["generation"]}},
            )

    kube_emulator.on_write(observe)
    apps.patch_namespaced_deployment(
        "web",
        NS,
        {
            "spec": {
                "template": {"metadata": {"annotations": {RESTARTED_AT: "2026-11-01T10:07:03Z"}}}
            }
        },
    )
    stored = kube_emulator.get("deployments", NS, "web")
    assert stored["status"]["observedGeneration"] == stored["metadata"]["generation"] == 2


def test_python_side_api(kube_emulator):
    loaded = kube_emulator.load(DEMO)
    assert any(o["kind"] == "PodDisruptionBudget" for o in loaded)
    pods = kube_emulator.list("pods", field_selector="spec.nodeName=gpu-node-1")
    assert pods and all(p["spec"]["nodeName"] == "gpu-node-1" for p in pods)
    first = pods[0]
    first["metadata"]["labels"] = {"mutated": "locally"}  # copies, not the stored object
    assert kube_emulator.get("pods", first["metadata"]["namespace"], first["metadata"]["name"])[
        "metadata"
    ].get("labels") != {"mutated": "locally"}
    assert (
        kube_emulator.remove("pods", first["metadata"]["namespace"], first["metadata"]["name"])
        is not None
    )
    assert (
        kube_emulator.get("Pod", first["metadata"]["namespace"], first["metadata"]["name"]) is None
    )
    kube_emulator.reset()
    assert kube_emulator.list("nodes") == [] and kube_emulator.requests == []
