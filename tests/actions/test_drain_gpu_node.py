"""drain-gpu-node, pure: Xid alert / kernel-log line + fleet -> Plan or NoPlan."""

from __future__ import annotations

import pytest

from remediation.actions.base import INCIDENT_ANNOTATION, remediation_key
from remediation.actions.catalogue import CATALOGUE
from remediation.actions.drain_gpu_node import (
    CORDON_REASON,
    CORDONED_BY,
    REBOOT_BOOT_ID,
    REBOOT_LABEL,
    REBOOT_REASON,
    XID_TAINT_KEY,
    plan_drain_gpu_node,
    xid_table,
    xids_from_text,
)
from remediation.errors import InvalidInput
from remediation.model import NoPlan, Plan, thaw

from .gpu_fleet import alert, ctx, deployment, fleet, node, pod, splunk

OTHER_TAINT = {"key": "dedicated", "value": "inference", "effect": "NoSchedule"}


def gpu_fleet(**node_kw):
    """gpu-1 (the faulty node) runs: two vLLM replicas' pods of different
    workloads, a DaemonSet pod with a GPU, a mirror pod, a pod without a
    controller, a pod with emptyDir, a finished pod and a CPU-only pod."""
    return fleet(
        node("gpu-1", resource_version="42", **{"taints": [OTHER_TAINT], **node_kw}),
        node("gpu-2"), node("gpu-3"), node("gpu-4", unschedulable=True,
                                           annotations={CORDONED_BY: "older"}),
        node("cpu-1", gpus=0),
        deployment("vllm-a", 2), deployment("vllm-b", 1),
        pod("vllm-a-1", "gpu-1", 2), pod("vllm-a-2", "gpu-2", 2),
        pod("vllm-b-1", "gpu-1", 1),
        pod("gpu-ds-x", "gpu-1", 1, owner=("DaemonSet", "gpu-ds")),
        pod("static-burn-gpu-1", "gpu-1", 1, owner=("Node", "gpu-1"),
            annotations={"kubernetes.io/config.mirror": "abc"}),
        pod("debug-cuda", "gpu-1", 1, owner=None),
        pod("embed-1", "gpu-1", 1, app="embed", empty_dir=True),
        pod("job-done", "gpu-1", 1, phase="Succeeded"),
        pod("sidecar-cpu", "gpu-1", 0),
    )


def xid_alert(xid: str = "48", **labels):
    return alert("GPUXidError", Hostname="gpu-1", gpu="3", UUID="GPU-abc",
                 modelName="NVIDIA H100 80GB HBM3", xid=xid, **labels)


def test_drain_cordons_taints_and_evicts_only_the_gpu_pods_kubectl_drain_would():
    f = gpu_fleet()
    sig = xid_alert("48")
    p = plan_drain_gpu_node(ctx(sig, f))
    assert isinstance(p, Plan)
    assert (p.function, p.action, str(p.target)) == ("drain-gpu-node", "cordon-drain",
                                                     "Node/gpu-1")
    assert p.key == remediation_key("drain-gpu-node", sig, p.target)
    cordon, *evictions = p.steps
    assert (cordon.verb, cordon.kind, cordon.name, cordon.patch_type) == (
        "patch", "Node", "gpu-1", "merge")
    body = thaw(cordon.body)
    assert body["spec"]["unschedulable"] is True
    # the FULL new taints list: the existing taint kept, ours appended
    assert body["spec"]["taints"] == [OTHER_TAINT, {"key": XID_TAINT_KEY, "value": "48",
                                                    "effect": "NoSchedule"}]
    assert body["metadata"]["annotations"][CORDONED_BY] == sig.incident
    assert "Xid 48" in body["metadata"]["annotations"][CORDON_REASON]
    assert body["metadata"]["resourceVersion"] == "42"
    assert [(s.verb, s.namespace, s.name) for s in evictions] == [
        ("evict", "llm-serving", "vllm-a-1"), ("evict", "llm-serving", "vllm-b-1")]
    assert thaw(evictions[0].body) == {"preconditions": {"uid": "uid-vllm-a-1"}}
    params = thaw(p.params)
    assert params["evict_pods"] == ["llm-serving/vllm-a-1", "llm-serving/vllm-b-1"]
    assert params["evict_count"] == 2 and params["evict_namespaces"] == ["llm-serving"]
    skipped = {s["pod"]: s["reason"] for s in params["skipped_pods"]}
    assert set(skipped) == {"llm-serving/gpu-ds-x", "llm-serving/static-burn-gpu-1",
                            "llm-serving/debug-cuda", "llm-serving/embed-1"}
    assert "DaemonSet" in skipped["llm-serving/gpu-ds-x"]
    assert "mirror" in skipped["llm-serving/static-burn-gpu-1"]
    assert "delete_unmanaged" in skipped["llm-serving/debug-cuda"]
    assert "delete_local_data" in skipped["llm-serving/embed-1"]
    assert any("left llm-serving/debug-cuda" in r for r in p.reasons)
    # circuit breaker: 4 GPU nodes (cpu-1 is not one), 1 cordoned, 2 after
    assert (params["gpu_nodes"], params["cordoned_gpu_nodes"],
            params["cordoned_gpu_nodes_after"]) == (4, 1, 2)
    assert params["delete_unmanaged"] is False and params["delete_local_data"] is False
    assert (params["xid"], params["xid_action"], params["gpu"], params["uuid"]) == (
        48, "drain", "3", "GPU-abc")
    assert params["evict_deadline_seconds"] == 120
    assert params["taint"] == "nvidia.com/gpu-xid=48:NoSchedule"


def test_consent_options_let_unmanaged_and_emptydir_pods_be_evicted_and_say_so():
    p = plan_drain_gpu_node(ctx(xid_alert("95"), gpu_fleet(), delete_unmanaged=True,
                                delete_local_data=True, evict_deadline_seconds=30))
    assert isinstance(p, Plan)
    params = thaw(p.params)
    assert "llm-serving/debug-cuda" in params["evict_pods"]
    assert "llm-serving/embed-1" in params["evict_pods"]
    assert params["unmanaged_pods"] == ["llm-serving/debug-cuda"]
    assert params["local_data_pods"] == ["llm-serving/embed-1"]
    assert params["delete_unmanaged"] is True and params["delete_local_data"] is True
    assert params["evict_deadline_seconds"] == 30
    assert {s["pod"] for s in params["skipped_pods"]} == {
        "llm-serving/gpu-ds-x", "llm-serving/static-burn-gpu-1"}


def test_xid_79_drains_and_marks_the_node_for_reboot_with_its_boot_id():
    p = plan_drain_gpu_node(ctx(xid_alert("79"), gpu_fleet(boot_id="boot-A")))
    assert isinstance(p, Plan) and p.action == "mark-reboot"
    body = thaw(p.steps[0].body)
    assert body["metadata"]["labels"] == {REBOOT_LABEL: "true"}
    ann = body["metadata"]["annotations"]
    assert ann[REBOOT_BOOT_ID] == "boot-A" and "reboot" in ann[REBOOT_REASON]
    assert body["spec"]["taints"][-1]["value"] == "79"
    assert thaw(p.params)["mark_reboot"] is True
    assert [s.verb for s in p.steps[1:]] == ["evict", "evict"]


@pytest.mark.parametrize("labels, annotations", [
    ({"xid": "74"}, {}),
    ({"value": "74"}, {}),
    ({}, {"value": "74"}),
    ({}, {"value": "74.0"}),
    ({}, {"xid": "74"}),
])
def test_the_xid_value_is_read_from_label_or_annotation(labels, annotations):
    sig = alert("DCGMXidErrors", annotations=annotations, kubernetes_node="gpu-1", **labels)
    p = plan_drain_gpu_node(ctx(sig, gpu_fleet()))
    assert isinstance(p, Plan) and thaw(p.params)["xid"] == 74


@pytest.mark.parametrize("value", ["79; rm -rf", "-1", "0x4f", "79,48"])
def test_a_malformed_xid_value_is_rejected(value):
    with pytest.raises(InvalidInput):
        plan_drain_gpu_node(ctx(xid_alert(value), gpu_fleet()))


@pytest.mark.parametrize("xid, reason", [
    ("92", "not in the Xid table"),
    ("0", "no Xid"),
])
def test_unknown_xid_and_xid_0_are_ignored_with_a_reason(xid, reason):
    p = plan_drain_gpu_node(ctx(xid_alert(xid), gpu_fleet()))
    assert isinstance(p, NoPlan)
    assert any(reason in r for r in p.reasons), p.reasons


def test_splunk_kernel_line_most_severe_xid_wins():
    lines = ["kernel: NVRM: Xid (PCI:0000:3b:00): 13, pid=2211, Graphics Exception",
             ("kernel: NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, "
              "GPU has fallen off the bus.")]
    p = plan_drain_gpu_node(ctx(splunk(lines, host="GPU-1"), gpu_fleet()))
    assert isinstance(p, Plan) and p.action == "mark-reboot" and str(p.target) == "Node/gpu-1"
    params = thaw(p.params)
    assert params["xids"] == [13, 79] and params["xid_source"] == "kernel log line"


def test_splunk_raw_field_is_read_when_message_has_nothing():
    raw = "Nov  1 11:02:13 gpu-1 kernel: NVRM: Xid (PCI:0000:3b:00.0): 48, pid=1, DBE"
    p = plan_drain_gpu_node(ctx(splunk("no xid here", raw=raw), gpu_fleet()))
    assert isinstance(p, Plan) and thaw(p.params)["xid"] == 48


@pytest.mark.parametrize("text", [
    "Xid 79 happened",                                    # no NVRM prefix
    "NVRM: Xid (PCI:0000:3b:00): seventy-nine, pid=1",     # not a number
    "NVRM: Xid (PCI:3b:00): 79, pid=1",                    # malformed PCI address
    "NVRM: Xid (PCI:0000:3b:00): 79999, pid=1",            # absurd Xid
])
def test_the_kernel_line_regex_is_strict(text):
    assert xids_from_text([text]) == []
    p = plan_drain_gpu_node(ctx(splunk(text), gpu_fleet()))
    assert isinstance(p, NoPlan)


def test_the_table_is_data_and_operators_replace_it(tmp_path):
    table, unknown = xid_table({})
    assert table[79] == "drain-and-reboot" and table[13] == "restart-app"
    assert table[48] == "drain" and unknown == "ignore"
    p = plan_drain_gpu_node(ctx(xid_alert("13"), gpu_fleet(),
                                xid_table={"actions": {"drain": [13]}}))
    assert isinstance(p, Plan) and p.action == "cordon-drain"
    f = tmp_path / "xid.yaml"
    f.write_text("actions:\n  restart-app: [79]\nunknown: drain\n")
    p = plan_drain_gpu_node(ctx(xid_alert("92"), gpu_fleet(), xid_table_file=str(f)))
    assert isinstance(p, Plan) and p.action == "cordon-drain"  # unknown -> drain here
    with pytest.raises(InvalidInput):
        plan_drain_gpu_node(ctx(xid_alert("13"), gpu_fleet(),
                                xid_table={"actions": {"explode": [13]}}))
    with pytest.raises(InvalidInput):
        plan_drain_gpu_node(ctx(xid_alert("13"), gpu_fleet(),
                                xid_table_file=str(tmp_path / "missing.yaml")))


def test_restart_app_uses_the_dcgm_pod_mapping_through_the_restart_planner():
    sig = xid_alert("13", namespace="gpu-operator", pod="dcgm-exporter-x",
                    exported_namespace="llm-serving", exported_pod="vllm-b-1")
    p = plan_drain_gpu_node(ctx(sig, gpu_fleet()))
    assert isinstance(p, Plan)
    assert (p.function, p.action, str(p.target)) == (
        "drain-gpu-node", "rollout-restart", "Deployment/llm-serving/vllm-b")
    assert p.key == remediation_key("drain-gpu-node", sig, p.target)
    ann = thaw(p.steps[0].body)["spec"]["template"]["metadata"]["annotations"]
    assert ann[INCIDENT_ANNOTATION] == sig.incident
    params = thaw(p.params)
    assert params["pod"] == "llm-serving/vllm-b-1" and params["pod_mapping"] is True


def test_restart_app_without_mapping_restarts_the_only_gpu_workload_on_the_node():
    f = fleet(node("gpu-1"), deployment("vllm-a", 1), pod("vllm-a-1", "gpu-1", 2),
              pod("gpu-ds-x", "gpu-1", 1, owner=("DaemonSet", "gpu-ds")))
    p = plan_drain_gpu_node(ctx(xid_alert("31"), f))
    assert isinstance(p, Plan) and str(p.target) == "Deployment/llm-serving/vllm-a"
    assert thaw(p.params)["pod_mapping"] is False


def test_restart_app_without_mapping_refuses_to_guess_between_workloads():
    p = plan_drain_gpu_node(ctx(xid_alert("43"), gpu_fleet()))
    assert isinstance(p, NoPlan)
    assert "no pod mapping" in p.reasons[0] and "Deployment/llm-serving/vllm-a" in p.reasons[0]


def test_restart_app_respects_the_restart_planners_refusals():
    f = fleet(node("gpu-1"), deployment("vllm-a", 1, paused=True), pod("vllm-a-1", "gpu-1"))
    p = plan_drain_gpu_node(ctx(xid_alert("8"), f))
    assert isinstance(p, NoPlan) and p.function == "drain-gpu-node"
    assert "paused" in p.reasons[0]


def test_a_node_someone_else_cordoned_is_never_touched():
    p = plan_drain_gpu_node(ctx(xid_alert("95"), gpu_fleet(unschedulable=True)))
    assert isinstance(p, NoPlan) and "someone else" in p.reasons[0]


def test_a_second_incident_on_our_cordoned_node_is_appended_not_overwritten():
    f = gpu_fleet(unschedulable=True, annotations={CORDONED_BY: "first"},
                  taints=[OTHER_TAINT, {"key": XID_TAINT_KEY, "value": "48",
                                        "effect": "NoSchedule"}])
    sig = xid_alert("95")
    p = plan_drain_gpu_node(ctx(sig, f))
    assert isinstance(p, Plan)
    body = thaw(p.steps[0].body)
    assert body["metadata"]["annotations"] == {CORDONED_BY: f"first,{sig.incident}"}
    assert "spec" not in body  # already unschedulable, our taint already there
    params = thaw(p.params)
    assert params["already_cordoned_by_us"] is True
    assert params["cordoned_gpu_nodes"] == params["cordoned_gpu_nodes_after"] == 2


def test_when_everything_is_done_for_this_incident_it_says_so():
    sig = xid_alert("48")
    f = fleet(node("gpu-1", unschedulable=True, annotations={CORDONED_BY: sig.incident},
                   taints=[{"key": XID_TAINT_KEY, "value": "48", "effect": "NoSchedule"}]),
              pod("gpu-ds-x", "gpu-1", 1, owner=("DaemonSet", "gpu-ds")))
    p = plan_drain_gpu_node(ctx(sig, f))
    assert isinstance(p, NoPlan) and p.already_done


@pytest.mark.parametrize("labels, expect", [
    ({"xid": "48"}, "names no node"),
    ({"xid": "48", "Hostname": "gpu-9"}, "not found"),
])
def test_no_plan_without_a_usable_node(labels, expect):
    p = plan_drain_gpu_node(ctx(alert(**labels), gpu_fleet()))
    assert isinstance(p, NoPlan) and expect in p.reasons[0]


def test_a_hostile_node_label_is_rejected():
    with pytest.raises(InvalidInput):
        plan_drain_gpu_node(ctx(alert(Hostname="../etc", xid="48"), gpu_fleet()))


def test_registered_in_the_catalogue_and_handles_resolved_alerts():
    r = CATALOGUE["drain-gpu-node"]
    assert r.planner is plan_drain_gpu_node and r.handles_resolved


def test_a_repeated_splunk_search_run_does_not_pile_onto_our_cordon():
    line = "NVRM: Xid (PCI:0000:3b:00): 48, pid=1, DBE"
    f = fleet(node("gpu-1", unschedulable=True, annotations={CORDONED_BY: "first-run"},
                   taints=[{"key": XID_TAINT_KEY, "value": "48", "effect": "NoSchedule"}]),
              deployment("vllm-a", 1), pod("vllm-a-1", "gpu-1", 1))
    p = plan_drain_gpu_node(ctx(splunk(line, sid="second-run"), f))
    assert isinstance(p, Plan)
    assert [s.verb for s in p.steps] == ["evict"]  # a leftover pod still goes; no node patch
    done = fleet(node("gpu-1", unschedulable=True, annotations={CORDONED_BY: "first-run"},
                      taints=[{"key": XID_TAINT_KEY, "value": "48", "effect": "NoSchedule"}]))
    p = plan_drain_gpu_node(ctx(splunk(line, sid="third-run"), done))
    assert isinstance(p, NoPlan) and p.already_done


def test_pods_in_skip_namespaces_are_left_and_listed():
    f = fleet(node("gpu-1"), deployment("vllm-a", 1), pod("vllm-a-1", "gpu-1", 1),
              deployment("shared", 1, ns="openshift-ai"),
              pod("shared-1", "gpu-1", 1, ns="openshift-ai", app="shared"))
    p = plan_drain_gpu_node(ctx(xid_alert("48"), f, skip_namespaces=["openshift-ai"]))
    assert isinstance(p, Plan)
    params = thaw(p.params)
    assert params["evict_pods"] == ["llm-serving/vllm-a-1"]
    assert params["evict_namespaces"] == ["llm-serving"]
    assert params["skipped_pods"][0]["pod"] == "openshift-ai/shared-1"


def test_an_xid_naming_a_node_without_gpus_drains_nothing():
    """dcgm-exporter's Hostname left as its own pod's name, or a wrong relabel,
    can point an Xid at a CPU or control-plane node: never cordon it."""
    from remediation.actions.drain_gpu_node import plan_drain_gpu_node as plan
    from remediation.model import NoPlan

    from .gpu_fleet import alert, ctx, fleet, node

    p = plan(ctx(alert("GPUXidError", Hostname="cpu-0", xid="79"), fleet(node("cpu-0", gpus=0))))
    assert isinstance(p, NoPlan)
    assert "not a GPU node" in p.reasons[0]
