# Unit tests for remediation.rego: every deny rule has at least one test.
# Run with the embedded engine: `remediate policy test` (part of `make test`).
package remediation_test

import rego.v1

import data.remediation

step(verb, kind, ns, name) := {"verb": verb, "kind": kind, "namespace": ns, "name": name}

# What guard/targets.py reads from the cluster for these plans.
inference_ns(ns) := {"found": true, "labels": {"inferenceremediation.io/inference": "true"}}

engine(kind) := {"found": true, "kind": kind, "labels": {"app": "vllm"}, "template_labels": {}, "images": ["vllm/vllm-openai:v0.11.0"]}

gpu_node := {"found": true, "labels": {"nvidia.com/gpu.present": "true"}, "gpu_capacity": 8, "control_plane": false}

restart(ns) := {
	"action": "rollout-restart",
	"plan": {"steps": [step("patch", "Deployment", ns, "vllm")], "params": {}},
	"target": {"kind": "Deployment", "namespace": ns, "name": "vllm"},
	"namespaces": [ns],
	"self_namespace": "remediation",
	"stats": {},
	"now": "2026-11-01T10:00:00Z",
	"facts": {"nodes": {}, "namespaces": {ns: inference_ns(ns)}, "workloads": {sprintf("Deployment/%s/vllm", [ns]): engine("Deployment")}},
}

drain(params) := {
	"action": "cordon-drain",
	"plan": {"steps": [step("patch", "Node", "", "gpu-node-1"), step("evict", "Pod", "llm", "p")], "params": params},
	"target": {"kind": "Node", "namespace": "", "name": "gpu-node-1"},
	"namespaces": ["llm"],
	"self_namespace": "remediation",
	"stats": {},
	"now": "2026-11-01T10:00:00Z",
	"facts": {"nodes": {"gpu-node-1": gpu_node}, "namespaces": {}, "workloads": {}},
}

test_restart_in_serving_namespace_allowed if {
	d := remediation.decision with input as restart("llm-serving")
	d.allow == true
	d.needs_approval == false
}

test_protected_namespace_denied if {
	d := remediation.decision with input as restart("kube-system")
	d.allow == false
	"namespace kube-system is protected" in d.reasons
}

test_protected_prefix_denied if {
	d := remediation.decision with input as restart("openshift-ai-platform")
	d.allow == false
	"namespace openshift-ai-platform is protected" in d.reasons
}

test_own_namespace_denied if {
	d := remediation.decision with input as restart("remediation")
	d.allow == false
}

test_unknown_action_denied if {
	d := remediation.decision with input as object.union(restart("llm"), {"action": "rm-rf"})
	d.allow == false
	"unknown action rm-rf" in d.reasons
}

test_kind_not_allowed_for_action_denied if {
	inp := object.union(restart("llm"), {"plan": {"steps": [step("patch", "Node", "", "n1")], "params": {}}})
	d := remediation.decision with input as inp
	"action rollout-restart may not touch a Node" in d.reasons
}

test_verb_not_allowed_for_action_denied if {
	inp := object.union(restart("llm"), {"plan": {"steps": [step("delete", "Deployment", "llm", "vllm")], "params": {}}})
	d := remediation.decision with input as inp
	"action rollout-restart may not delete" in d.reasons
}

test_too_many_steps_denied if {
	s := step("patch", "Deployment", "llm", "vllm")
	inp := object.union(restart("llm"), {"plan": {"steps": [s, s], "params": {}}})
	d := remediation.decision with input as inp
	d.allow == false
}

test_empty_plan_denied if {
	inp := object.union(restart("llm"), {"plan": {"steps": [], "params": {}}})
	d := remediation.decision with input as inp
	"plan has no steps" in d.reasons
}

# Steps that are not a list are no steps (denied), in every engine: OPA would
# otherwise skip every check that iterates them, and regorus fail.
test_steps_that_are_not_a_list_are_no_steps if {
	inp := object.union(restart("llm"), {"plan": {"steps": null, "params": {}}})
	d := remediation.decision with input as inp
	d.reasons == ["plan has no steps"]
}

# A step's own namespace is checked even when the input's list leaves it out.
test_step_namespace_is_checked_too if {
	inp := object.union(restart("llm"), {"plan": {"steps": [step("patch", "Deployment", "kube-system", "x")], "params": {}}})
	d := remediation.decision with input as inp
	d.reasons == ["namespace kube-system is protected"]
}

test_protected_node_denied if {
	d := remediation.decision with input as drain({"node": "gpu-node-1"})
		with data.remediation_config.protected_nodes as ["gpu-node-1"]
	"node gpu-node-1 is off limits" in d.reasons
}

# each of the two node rules alone: a step on the node, or the node in params
test_protected_node_in_a_step_denied if {
	d := remediation.decision with input as drain({})
		with data.remediation_config.protected_nodes as ["gpu-node-1"]
	d.allow == false
	"node gpu-node-1 is off limits" in d.reasons
}

test_protected_node_in_params_denied if {
	inp := object.union(drain({"node": "gpu-node-9"}), {"plan": {"steps": [step("evict", "Pod", "llm", "p")]}})
	d := remediation.decision with input as inp
		with data.remediation_config.protected_nodes as ["gpu-node-9"]
	d.allow == false
	"node gpu-node-9 is off limits" in d.reasons
}

# the exact list alone (no prefix rule can match this name)
test_protected_namespace_list_denied if {
	d := remediation.decision with input as restart("payments")
		with data.remediation_config.protected_namespaces as ["payments"]
		with data.remediation_config.protected_namespace_prefixes as []
	d.allow == false
	"namespace payments is protected" in d.reasons
}

test_target_cooldown_denied if {
	inp := object.union(restart("llm"), {"stats": {"target_actions_in_window": 3}})
	d := remediation.decision with input as inp
	d.allow == false
}

test_action_rate_limit_denied if {
	inp := object.union(restart("llm"), {"stats": {"action_count_in_window": 20}})
	d := remediation.decision with input as inp
	d.allow == false
}

test_cluster_rate_limit_denied if {
	inp := object.union(restart("llm"), {"stats": {"cluster_actions_in_window": 50}})
	d := remediation.decision with input as inp
	d.allow == false
}

test_eviction_count_limit_denied if {
	inp := object.union(drain({"evict_count": 200}), {"action": "evict-pods", "plan": {"steps": [step("evict", "Pod", "llm", "p")], "params": {"evict_count": 5}}})
	d := remediation.decision with input as inp
	d.allow == false
}

test_drain_within_circuit_breaker_allowed if {
	d := remediation.decision with input as drain({"cordon": true, "gpu_nodes": 8, "cordoned_gpu_nodes_after": 2})
	d.allow == true
}

test_circuit_breaker_denies_crossing_the_limit if {
	d := remediation.decision with input as drain({"cordon": true, "gpu_nodes": 4, "cordoned_gpu_nodes_after": 2})
	d.allow == false
	"circuit breaker: 2 of 4 GPU nodes would be cordoned (limit 25%)" in d.reasons
}

test_circuit_breaker_ignores_a_node_we_already_hold if {
	d := remediation.decision with input as drain({"cordon": true, "already_cordoned_by_us": true, "gpu_nodes": 4, "cordoned_gpu_nodes_after": 2})
	d.allow == true
}

scale(to, max) := {
	"action": "scale-out",
	"plan": {"steps": [step("scale", "Deployment", "llm", "vllm")], "params": {"to_replicas": to, "max_replicas": max}},
	"target": {"kind": "Deployment", "namespace": "llm", "name": "vllm"},
	"namespaces": ["llm"], "self_namespace": "remediation", "stats": {}, "now": "2026-11-01T10:00:00Z",
}

test_scale_within_maximum_allowed if {
	d := remediation.decision with input as scale(3, 4)
	d.allow == true
}

test_scale_over_workload_maximum_denied if {
	d := remediation.decision with input as scale(5, 4)
	d.allow == false
}

test_scale_over_policy_maximum_denied if {
	d := remediation.decision with input as scale(40, 64)
	"scale to 40 replicas exceeds the policy maximum 32" in d.reasons
}

test_unmanaged_pods_need_consent_denied if {
	d := remediation.decision with input as drain({"delete_unmanaged": true, "unmanaged_pods": ["llm/p"]})
	d.allow == false
}

test_unmanaged_pods_with_consent_allowed if {
	d := remediation.decision with input as drain({"delete_unmanaged": true, "unmanaged_pods": ["llm/p"]})
		with data.remediation_config.consent.delete_unmanaged as true
	d.allow == true
}

test_local_data_needs_consent_denied if {
	d := remediation.decision with input as drain({"delete_local_data": true, "local_data_pods": ["llm/p"]})
	d.allow == false
}

test_change_freeze_denied if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.freezes as [{"name": "black-friday", "start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"}]
	"change freeze black-friday until 2026-11-02T00:00:00Z" in d.reasons
}

# bounds with an offset are instants: 10:30+01:00 is 09:30Z, before now (10:00Z),
# so this freeze is on (a string comparison would call it off)
test_change_freeze_with_offsets_compares_instants if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.freezes as [{"name": "cet", "start": "2026-11-01T10:30:00+01:00", "end": "2026-11-01T12:00:00+01:00"}]
	d.allow == false
	"change freeze cet until 2026-11-01T12:00:00+01:00" in d.reasons
}

test_malformed_freeze_fails_closed if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.freezes as [{"name": "typo", "start": "1 Dec", "end": "2026-12-02T00:00:00Z"}]
	d.allow == false
	"change freeze typo has a start or end that is not an RFC 3339 time: every action is refused until it is fixed" in d.reasons
}

test_freeze_without_a_name_still_holds if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.freezes as [{"start": "2026-11-01T09:00:00Z", "end": "2026-11-01T11:00:00Z"}]
	d.allow == false
	"change freeze (unnamed) until 2026-11-01T11:00:00Z" in d.reasons
}

test_freeze_with_a_non_string_bound_fails_closed if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.freezes as [{"name": "n", "start": 5, "end": "2026-12-02T00:00:00Z"}]
	d.allow == false
}

test_freeze_bound_out_of_range_or_lower_case_z_fails_closed if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.freezes as [{"name": "m13", "start": "2026-13-01T00:00:00Z", "end": "2026-12-02T00:00:00z"}]
	d.allow == false
	"change freeze m13 has a start or end that is not an RFC 3339 time: every action is refused until it is fixed" in d.reasons
}

# Dates that do not exist, or outside what fits in nanoseconds since 1970:
# not times (parsing them would fail the whole evaluation in regorus).
test_freeze_on_a_day_that_does_not_exist_fails_closed if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.freezes as [
			{"name": "feb30", "start": "2026-02-30T00:00:00Z", "end": "2026-03-02T00:00:00Z"},
			{"name": "apr31", "start": "2026-04-01T00:00:00Z", "end": "2026-04-31T00:00:00Z"},
			{"name": "far", "start": "2300-01-01T00:00:00Z", "end": "2301-01-01T00:00:00Z"},
		]
	d.allow == false
	d.reasons == [
		"change freeze apr31 has a start or end that is not an RFC 3339 time: every action is refused until it is fixed",
		"change freeze far has a start or end that is not an RFC 3339 time: every action is refused until it is fixed",
		"change freeze feb30 has a start or end that is not an RFC 3339 time: every action is refused until it is fixed",
	]
}

test_freeze_on_a_leap_day_is_a_time if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.freezes as [{"name": "leap", "start": "2028-02-29T00:00:00Z", "end": "2028-03-01T00:00:00Z"}]
	d.allow == true
}

test_malformed_maintenance_window_is_never_open if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.actions["rollout-restart"].only_in_maintenance_window as true
		with data.remediation_config.maintenance_windows as [{"start": "today", "end": "2026-11-01T11:00:00Z"}]
	d.allow == false
}

test_outside_freeze_allowed if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.freezes as [{"name": "later", "start": "2026-12-01T00:00:00Z", "end": "2026-12-02T00:00:00Z"}]
	d.allow == true
}

test_maintenance_window_only_denied_outside if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.actions["rollout-restart"].only_in_maintenance_window as true
	d.allow == false
}

test_maintenance_window_only_allowed_inside if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.actions["rollout-restart"].only_in_maintenance_window as true
		with data.remediation_config.maintenance_windows as [{"start": "2026-11-01T09:00:00Z", "end": "2026-11-01T11:00:00Z"}]
	d.allow == true
}

test_approval_required if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.actions["rollout-restart"].approval as true
	d.allow == true
	d.needs_approval == true
}

test_approved_remediation_needs_no_more_approval if {
	d := remediation.decision with input as object.union(restart("llm"), {"approval": {"approved_by": "alice"}})
		with data.remediation_config.actions["rollout-restart"].approval as true
	d.allow == true
	d.needs_approval == false
}

test_approval_by_someone_not_listed_is_denied if {
	d := remediation.decision with input as object.union(restart("llm"), {"approval": {"approved_by": "mallory"}})
		with data.remediation_config.actions["rollout-restart"].approval as true
		with data.remediation_config.approvers as ["alice"]
	d.allow == false
	"mallory is not an approver" in d.reasons
}

test_approval_by_a_listed_approver_counts if {
	d := remediation.decision with input as object.union(restart("llm"), {"approval": {"approved_by": "alice"}})
		with data.remediation_config.actions["rollout-restart"].approval as true
		with data.remediation_config.approvers as ["alice"]
	d.allow == true
	d.needs_approval == false
}

test_empty_approval_still_needs_approval if {
	d := remediation.decision with input as object.union(restart("llm"), {"approval": {"approved_by": ""}})
		with data.remediation_config.actions["rollout-restart"].approval as true
	d.needs_approval == true
}

test_global_dry_run_switch if {
	d := remediation.decision with input as restart("llm")
		with data.remediation_config.force_dry_run as true
	d.dry_run == true
}

# -- issue 15: node actions only on GPU nodes, never the control plane -------

# replaces the facts outright (object.union would merge them)
with_facts(inp, facts) := object.union(object.remove(inp, ["facts"]), {"facts": facts})

node_facts_as(facts) := object.union(drain({}), {"facts": {"nodes": {"gpu-node-1": facts}}})

test_drain_of_a_gpu_node_allowed if {
	d := remediation.decision with input as drain({})
	d.allow == true
}

test_drain_of_a_cpu_node_denied if {
	d := remediation.decision with input as node_facts_as(object.union(gpu_node, {"gpu_capacity": 0, "labels": {}}))
	d.allow == false
	"node gpu-node-1 has no GPU capacity: node actions apply only to GPU nodes" in d.reasons
}

test_drain_of_a_control_plane_node_denied_even_with_gpus if {
	d := remediation.decision with input as node_facts_as(object.union(gpu_node, {"control_plane": true}))
	d.allow == false
	"node gpu-node-1 is a control-plane node: never touched" in d.reasons
}

test_control_plane_label_alone_denies if {
	d := remediation.decision with input as node_facts_as(object.union(gpu_node, {"labels": {"node-role.kubernetes.io/master": ""}}))
	d.allow == false
	"node gpu-node-1 is a control-plane node: never touched" in d.reasons
}

test_control_plane_node_denied_even_when_approved if {
	inp := object.union(node_facts_as(object.union(gpu_node, {"control_plane": true})), {"approval": {"approved_by": "alice"}})
	d := remediation.decision with input as inp
	d.allow == false
}

test_node_without_facts_denied if {
	d := remediation.decision with input as with_facts(drain({}), {"nodes": {}, "namespaces": {}, "workloads": {}})
	d.allow == false
	"node gpu-node-1: no facts from the cluster (not found or not read); node actions are refused without them" in d.reasons
}

test_node_input_without_any_facts_denied if {
	d := remediation.decision with input as object.remove(drain({}), ["facts"])
	d.allow == false
}

test_node_named_in_params_is_judged_too if {
	inp := object.union(drain({"node": "cp-1"}), {"facts": {"nodes": {"gpu-node-1": gpu_node, "cp-1": object.union(gpu_node, {"control_plane": true})}}})
	d := remediation.decision with input as inp
	d.allow == false
	"node cp-1 is a control-plane node: never touched" in d.reasons
}

# -- issue 15: restarts only of inference engines in inference namespaces ----

test_restart_outside_an_inference_namespace_denied if {
	inp := with_facts(restart("payments"), {"namespaces": {"payments": {"found": true, "labels": {}}}, "workloads": {"Deployment/payments/vllm": engine("Deployment")}})
	d := remediation.decision with input as inp
	d.allow == false
	"namespace payments is not an inference namespace (label it inferenceremediation.io/inference=true or list it in inference_namespaces): restarts happen only there" in d.reasons
}

test_restart_in_istio_system_denied if {
	inp := with_facts(restart("istio-system"), {"namespaces": {"istio-system": {"found": true, "labels": {}}}, "workloads": {"Deployment/istio-system/vllm": engine("Deployment")}})
	d := remediation.decision with input as inp
	d.allow == false
}

test_restart_in_a_namespace_listed_in_data_allowed if {
	inp := with_facts(restart("llm"), {"namespaces": {"llm": {"found": true, "labels": {}}}, "workloads": {"Deployment/llm/vllm": engine("Deployment")}})
	d := remediation.decision with input as inp with data.remediation_config.inference_namespaces as ["llm"]
	d.allow == true
}

test_restart_of_a_non_engine_denied if {
	payments := {"found": true, "kind": "Deployment", "labels": {"app": "payments"}, "template_labels": {}, "images": ["registry.example/payments:1.2"]}
	inp := object.union(restart("llm"), {"facts": {"workloads": {"Deployment/llm/vllm": payments}}})
	d := remediation.decision with input as inp
	d.allow == false
	"Deployment/llm/vllm is not an inference engine (no engine label, no known engine image): only inference engines are restarted" in d.reasons
}

test_restart_of_an_engine_by_label_allowed if {
	custom := {"found": true, "kind": "Deployment", "labels": {"inferenceremediation.io/engine": "in-house"}, "template_labels": {}, "images": ["registry.example/llm:7"]}
	inp := object.union(restart("llm"), {"facts": {"workloads": {"Deployment/llm/vllm": custom}}})
	d := remediation.decision with input as inp
	d.allow == true
}

test_restart_without_workload_facts_denied if {
	inp := with_facts(restart("llm"), {"namespaces": {"llm": inference_ns("llm")}, "workloads": {}})
	d := remediation.decision with input as inp
	d.allow == false
	"restart of an unknown workload: no facts from the cluster" in d.reasons
}

test_restart_of_a_missing_workload_denied if {
	inp := object.union(restart("llm"), {"facts": {"workloads": {"Deployment/llm/vllm": {"found": false}}}})
	d := remediation.decision with input as inp
	d.allow == false
	"Deployment/llm/vllm: not found in the cluster" in d.reasons
}

# -- agents (the MCP door) ---------------------------------------------------

agent_actor(reason) := {"actor": {"name": "inference-remediation", "via": "mcp", "kind": "agent", "client": "claude-code", "model": "m", "reason": reason}}

test_agent_restart_allowed_without_approval if {
	d := remediation.decision with input as object.union(restart("llm"), agent_actor("engine hung"))
	d.allow == true
	d.needs_approval == false
}

test_agent_drain_needs_approval if {
	d := remediation.decision with input as object.union(drain({}), agent_actor("xid 79"))
	d.allow == true
	d.needs_approval == true
}

test_alert_drain_needs_no_approval if {
	d := remediation.decision with input as drain({})
	d.allow == true
	d.needs_approval == false
}

test_agent_drain_approved_by_a_human_proceeds if {
	d := remediation.decision with input as object.union(object.union(drain({}), agent_actor("xid 79")), {"approval": {"approved_by": "alice"}})
	d.allow == true
	d.needs_approval == false
}

test_agent_evict_pods_and_mark_reboot_need_approval if {
	every action in ["evict-pods", "mark-reboot"] {
		d := remediation.decision with input as object.union(object.union(drain({}), agent_actor("r")), {"action": action, "plan": {"steps": [step("evict", "Pod", "llm", "p")], "params": {}}})
		d.allow == true
		d.needs_approval == true
	}
}

test_agent_without_reason_denied if {
	every reason in ["", "   ", null, 3] {
		d := remediation.decision with input as object.union(restart("llm"), agent_actor(reason))
		d.allow == false
		"an agent's request needs a reason" in d.reasons
	}
}

test_agent_rate_limit_on_agents_counts if {
	d := remediation.decision with input as object.union(object.union(restart("llm"), agent_actor("r")), {"stats": {"agent_actions_in_window": 10}})
	d.allow == false
	"agent rate limit: agents requested 10 action(s) in the window (limit 10)" in d.reasons
}

test_agent_rate_limit_per_client if {
	d := remediation.decision with input as object.union(object.union(restart("llm"), agent_actor("r")), {"stats": {"agent_client_actions_in_window": 5}})
	d.allow == false
	"agent rate limit: claude-code requested 5 action(s) in the window (limit 5)" in d.reasons
}

test_agent_counts_do_not_limit_alerts if {
	d := remediation.decision with input as object.union(restart("llm"), {"stats": {"agent_actions_in_window": 99, "agent_client_actions_in_window": 99}})
	d.allow == true
}

test_agent_below_limits_allowed if {
	d := remediation.decision with input as object.union(object.union(restart("llm"), agent_actor("r")), {"stats": {"agent_actions_in_window": 9, "agent_client_actions_in_window": 4}})
	d.allow == true
}

test_human_approval_lifts_agent_limits if {
	d := remediation.decision with input as object.union(object.union(drain({}), agent_actor("r")), {"stats": {"agent_actions_in_window": 10}, "approval": {"approved_by": "alice"}})
	d.allow == true
}

test_agent_forbidden_action_denied if {
	d := remediation.decision with input as object.union(restart("llm"), agent_actor("r"))
		with data.remediation_config.agents.forbidden_actions as ["rollout-restart"]
	d.allow == false
	"agents may not request rollout-restart" in d.reasons
}

test_agent_in_protected_namespace_denied if {
	d := remediation.decision with input as object.union(restart("kube-system"), agent_actor("r"))
	d.allow == false
	"namespace kube-system is protected" in d.reasons
}

test_agent_drain_needs_approval_when_data_has_no_agents_section if {
	d := remediation.decision with input as object.union(drain({}), agent_actor("xid 79"))
		with data.remediation_config.agents as null
	d.allow == true
	d.needs_approval == true
}

test_agent_approval_actions_follow_the_data if {
	d := remediation.decision with input as object.union(restart("llm"), agent_actor("r"))
		with data.remediation_config.agents.approval_actions as ["rollout-restart"]
	d.needs_approval == true
}

# -- error budgets (input.slo) ------------------------------------------------

slo(remaining, b5m, b1h) := {"slo": {"available": true, "service": "llm-serving", "slo": "availability", "burn_rates": {"5m": b5m, "1h": b1h, "6h": 2}, "error_budget_remaining": remaining}}

slo_down := {"slo": {"available": false, "service": "llm-serving", "reason": "prometheus: timed out"}}

cooled(inp) := object.union(inp, {"stats": {"target_actions_in_window": 3}})

test_exhausted_budget_sends_a_drain_to_approval if {
	d := remediation.decision with input as object.union(drain({}), slo(-0.2, 1, 1))
	d.allow == true
	d.needs_approval == true
	"slo: llm-serving error budget exhausted (-0.2 remaining): cordon-drain needs a human's approval" in d.reasons
}

test_budget_at_exactly_zero_is_exhausted if {
	d := remediation.decision with input as object.union(drain({}), slo(0, 1, 1))
	d.needs_approval == true
}

test_budget_left_lets_a_drain_run if {
	d := remediation.decision with input as object.union(drain({}), slo(0.01, 1, 1))
	d.allow == true
	d.needs_approval == false
}

test_every_disruptive_action_waits_on_an_exhausted_budget if {
	every action in ["cordon-drain", "mark-reboot", "evict-pods", "reschedule-pod"] {
		remediation.needs_approval with input as object.union(object.union(drain({}), slo(-1, 1, 1)), {"action": action})
			with remediation.allow as true
	}
}

test_exhausted_budget_does_not_stop_a_restart if {
	d := remediation.decision with input as object.union(restart("llm"), slo(-1, 1, 1))
	d.allow == true
	d.needs_approval == false
}

test_approval_of_the_drain_lets_it_run_on_an_exhausted_budget if {
	d := remediation.decision with input as object.union(object.union(drain({}), slo(-1, 1, 1)), {"approval": {"approved_by": "alice"}})
	d.allow == true
	d.needs_approval == false
}

test_unavailable_slo_does_not_hold_a_drain if {
	d := remediation.decision with input as object.union(drain({}), slo_down)
	d.allow == true
	d.needs_approval == false
}

test_fast_burn_lets_a_restart_through_the_cooldown if {
	d := remediation.decision with input as object.union(cooled(restart("llm")), slo(0.5, 20, 15))
	d.allow == true
	"slo: llm-serving burning fast (5m, 1h at 14.4 or more): cooldown bypassed" in d.reasons
}

test_fast_burn_at_exactly_the_threshold_counts if {
	d := remediation.decision with input as object.union(cooled(restart("llm")), slo(0.5, 14.4, 14.4))
	d.allow == true
}

test_fast_burn_needs_both_windows if {
	d1 := remediation.decision with input as object.union(cooled(restart("llm")), slo(0.5, 20, 14.3))
	d1.allow == false
	"cooldown: vllm already acted on 3 time(s) in the window (limit 3)" in d1.reasons
	d2 := remediation.decision with input as object.union(cooled(restart("llm")), slo(0.5, 14.3, 20))
	d2.allow == false
}

test_fast_burn_does_not_relax_a_drain_cooldown if {
	inp := object.union(object.union(drain({}), slo(0.5, 20, 20)), {"stats": {"target_actions_in_window": 1}})
	d := remediation.decision with input as inp
	d.allow == false
	"cooldown: gpu-node-1 already acted on 1 time(s) in the window (limit 1)" in d.reasons
}

test_fast_burn_does_not_lift_the_other_limits if {
	inp := object.union(restart("llm"), object.union(slo(0.5, 20, 20), {"stats": {"target_actions_in_window": 3, "action_count_in_window": 20}}))
	d := remediation.decision with input as inp
	d.allow == false
	"rate limit: 20 rollout-restart action(s) in the window (limit 20)" in d.reasons
	not "cooldown: vllm already acted on 3 time(s) in the window (limit 3)" in d.reasons
}

test_unavailable_slo_keeps_the_cooldown_and_says_why if {
	d := remediation.decision with input as object.union(cooled(restart("llm")), slo_down)
	d.allow == false
	d.reasons == ["cooldown: vllm already acted on 3 time(s) in the window (limit 3)", "slo: unavailable (prometheus: timed out): cooldown not relaxed"]
}

test_burn_rates_without_available_true_relax_nothing if {
	inp := object.union(cooled(restart("llm")), {"slo": {"burn_rates": {"5m": 99, "1h": 99}, "error_budget_remaining": 0.5}})
	d := remediation.decision with input as inp
	d.allow == false
}

test_missing_burn_window_relaxes_nothing if {
	inp := object.union(cooled(restart("llm")), {"slo": {"available": true, "burn_rates": {"5m": 99}, "error_budget_remaining": 0.5}})
	d := remediation.decision with input as inp
	d.allow == false
}

test_no_slo_input_changes_nothing if {
	d := remediation.decision with input as cooled(restart("llm"))
	d.reasons == ["cooldown: vllm already acted on 3 time(s) in the window (limit 3)"]
}

test_data_without_a_threshold_relaxes_nothing if {
	d := remediation.decision with input as object.union(cooled(restart("llm")), slo(0.5, 99, 99))
		with data.remediation_config.slo as null
	d.allow == false
}

test_data_without_the_slo_section_still_holds_drains_on_an_exhausted_budget if {
	d := remediation.decision with input as object.union(drain({}), slo(-1, 1, 1))
		with data.remediation_config.slo as null
	d.needs_approval == true
}
