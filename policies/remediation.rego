# The decision every remediation plan must pass (Rego v1).
#
# Input: see functions/remediation/guard/policy.py (policy_input): action,
# function, plan (steps, params), target, namespaces, kinds, event, actor,
# cluster, self_namespace, dry_run, stats (ledger counts in a window), now.
# Data: policies/data.json under data.remediation_config (operators merge their own).
#
# Output: data.remediation.decision =
#   {"allow": bool, "reasons": [string], "needs_approval": bool, "dry_run": bool}
# Every deny rule below has a test in remediation_test.rego.
package remediation

import rego.v1

cfg := data.remediation_config

# Defaults spelled out (not object.get) so the policy runs the same on OPA,
# regorus and rego-cpp.
default params := {}

params := input.plan.params

default stats := {}

stats := input.stats

num(obj, key) := obj[key] if is_number(obj[key])

num(obj, key) := 0 if not is_number(obj[key])

flag(obj, key) if obj[key] == true

items(obj, key) := obj[key] if is_array(obj[key])

items(obj, key) := [] if not is_array(obj[key])

default allow := false

allow if {
	count(deny) == 0
}

default needs_approval := false

needs_approval if {
	allow
	cfg.actions[input.action].approval == true
	not approved
}

# A human approved this very remediation (the ledger holds the approval; the
# pipeline passes it in). When data lists approvers, only they count.
approved if {
	is_string(input.approval.approved_by)
	input.approval.approved_by != ""
	not approver_refused
}

approver_refused if {
	count(items(cfg, "approvers")) > 0
	not input.approval.approved_by in items(cfg, "approvers")
}

default dry_run := false

dry_run if cfg.force_dry_run == true

reasons := sort(deny) if count(deny) > 0

reasons := [sprintf("allowed: %s on %s/%s", [input.action, input.target.kind, input.target.name])] if count(deny) == 0

decision := {"allow": allow, "reasons": reasons, "needs_approval": needs_approval, "dry_run": dry_run}

# -- what may be done at all ------------------------------------------------

deny contains msg if {
	is_string(input.approval.approved_by)
	input.approval.approved_by != ""
	approver_refused
	msg := sprintf("%s is not an approver", [input.approval.approved_by])
}

deny contains msg if {
	not cfg.actions[input.action]
	msg := sprintf("unknown action %s", [input.action])
}

deny contains msg if {
	action := cfg.actions[input.action]
	some step in input.plan.steps
	not step.kind in action.kinds
	msg := sprintf("action %s may not touch a %s", [input.action, step.kind])
}

deny contains msg if {
	action := cfg.actions[input.action]
	some step in input.plan.steps
	not step.verb in action.verbs
	msg := sprintf("action %s may not %s", [input.action, step.verb])
}

deny contains msg if {
	count(input.plan.steps) > cfg.actions[input.action].max_steps
	msg := sprintf("plan has %d steps; action %s allows at most %d", [count(input.plan.steps), input.action, cfg.actions[input.action].max_steps])
}

deny contains "plan has no steps" if {
	count(input.plan.steps) == 0
}

# -- where: namespaces and nodes that are off limits ------------------------

protected_namespace(ns) if ns in cfg.protected_namespaces

protected_namespace(ns) if {
	some prefix in cfg.protected_namespace_prefixes
	startswith(ns, prefix)
}

protected_namespace(ns) if ns == input.self_namespace

deny contains msg if {
	some ns in input.namespaces
	protected_namespace(ns)
	msg := sprintf("namespace %s is protected", [ns])
}

deny contains msg if {
	some step in input.plan.steps
	step.kind == "Node"
	step.name in cfg.protected_nodes
	msg := sprintf("node %s is off limits", [step.name])
}

deny contains msg if {
	node := params.node
	node in cfg.protected_nodes
	msg := sprintf("node %s is off limits", [node])
}

# -- how much: cooldowns, rate limits, circuit breaker ----------------------

deny contains msg if {
	limit := cfg.actions[input.action].max_per_target_in_window
	n := stats.target_actions_in_window
	is_number(n)
	n >= limit
	msg := sprintf("cooldown: %s already acted on %d time(s) in the window (limit %d)", [input.target.name, n, limit])
}

deny contains msg if {
	limit := cfg.actions[input.action].max_per_window
	n := stats.action_count_in_window
	is_number(n)
	n >= limit
	msg := sprintf("rate limit: %d %s action(s) in the window (limit %d)", [n, input.action, limit])
}

deny contains msg if {
	limit := cfg.limits.cluster_max_per_window
	n := stats.cluster_actions_in_window
	is_number(n)
	n >= limit
	msg := sprintf("cluster-wide rate limit: %d action(s) in the window (limit %d)", [n, limit])
}

deny contains msg if {
	limit := cfg.actions[input.action].max_evictions
	num(params, "evict_count") > limit
	msg := sprintf("plan evicts %d pods; action %s allows at most %d", [params.evict_count, input.action, limit])
}

# Circuit breaker: never let cordoned GPU nodes exceed a share of the fleet.
deny contains msg if {
	input.action in {"cordon-drain", "mark-reboot", "reschedule-pod"}
	flag(params, "cordon")
	not flag(params, "already_cordoned_by_us")
	total := num(params, "gpu_nodes")
	total > 0
	after := num(params, "cordoned_gpu_nodes_after")
	(after * 100) > (cfg.limits.max_cordoned_gpu_nodes_percent * total)
	msg := sprintf("circuit breaker: %d of %d GPU nodes would be cordoned (limit %d%%)", [after, total, cfg.limits.max_cordoned_gpu_nodes_percent])
}

deny contains msg if {
	input.action == "scale-out"
	to := num(params, "to_replicas")
	to > cfg.limits.max_replicas
	msg := sprintf("scale to %d replicas exceeds the policy maximum %d", [to, cfg.limits.max_replicas])
}

deny contains msg if {
	input.action == "scale-out"
	to := num(params, "to_replicas")
	to > num(params, "max_replicas")
	msg := sprintf("scale to %d replicas exceeds the workload maximum %d", [to, params.max_replicas])
}

# -- consent for risky evictions ---------------------------------------------

deny contains "deleting pods without a controller needs consent in policy data (consent.delete_unmanaged)" if {
	flag(params, "delete_unmanaged")
	count(items(params, "unmanaged_pods")) > 0
	not cfg.consent.delete_unmanaged
}

deny contains "evicting pods with local (emptyDir) data needs consent in policy data (consent.delete_local_data)" if {
	flag(params, "delete_local_data")
	count(items(params, "local_data_pods")) > 0
	not cfg.consent.delete_local_data
}

# -- when: change freezes and maintenance windows -----------------------------
# Window bounds are RFC 3339 times ("2026-12-24T00:00:00Z", or with an offset:
# "2026-12-24T00:00:00+01:00"); they are compared as instants, never as
# strings. A freeze whose bounds are not such times denies everything until it
# is fixed (fail closed); such a maintenance window never counts as open.

# ASCII digits and field ranges only (Rust's \d is Unicode; Go's parser, in
# OPA, takes no lower-case z): both engines then parse exactly the same bounds.
rfc3339 := `^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`

instant(t) := time.parse_rfc3339_ns(t) if {
	is_string(t)
	regex.match(rfc3339, t)
}

now_ns := instant(input.now)

open_window(w) if {
	instant(w.start) <= now_ns
	now_ns < instant(w.end)
}

valid_window(w) if {
	is_number(instant(w.start))
	is_number(instant(w.end))
}

freeze_name(w) := object.get(w, "name", "(unnamed)")

deny contains msg if {
	some w in cfg.freezes
	open_window(w)
	msg := sprintf("change freeze %v until %v", [freeze_name(w), w.end])
}

deny contains msg if {
	some w in cfg.freezes
	not valid_window(w)
	msg := sprintf("change freeze %v has a start or end that is not an RFC 3339 time: every action is refused until it is fixed", [freeze_name(w)])
}

in_maintenance_window if {
	some w in cfg.maintenance_windows
	open_window(w)
}

deny contains msg if {
	cfg.actions[input.action].only_in_maintenance_window == true
	not in_maintenance_window
	msg := sprintf("action %s runs only in a maintenance window", [input.action])
}
