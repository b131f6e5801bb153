# The decision every remediation plan must pass (Rego v1).
#
# Input: see functions/remediation/guard/policy.py (policy_input): action,
# function, plan (steps, params), target, namespaces, kinds, event, actor,
# cluster, self_namespace, dry_run, stats (ledger counts in a window), now,
# facts (nodes, namespaces and workloads the plan touches, from the cluster),
# slo (the target's error budget, when one is configured: see the last section).
# Data: policies/data.json under data.remediation_config (operators merge their own).
#
# Output: data.remediation.decision =
#   {"allow": bool, "reasons": [string], "needs_approval": bool, "dry_run": bool}
# Every deny rule below has a test in remediation_test.rego.
package remediation

import rego.v1

cfg := data.remediation_config

# Defaults spelled out (not object.get) so the policy runs the same on OPA,
# regorus and rego-cpp. Messages format every value with %v: the engines
# print a value of an unexpected type differently with %s or %d (and regorus
# prints a negative number as "--1" with %d).
default params := {}

params := input.plan.params if is_object(input.plan.params)

default stats := {}

stats := input.stats if is_object(input.stats)

# The plan's steps, and every namespace it touches (the input's list and the
# steps' own). Iterating a value of another type is an error in regorus and
# nothing at all in OPA: these are always collections, so both engines decide
# alike, and steps that are not a list count as no steps (denied).
default steps := []

steps := input.plan.steps if is_array(input.plan.steps)

namespaces := {ns | some ns in items(input, "namespaces")} | {step.namespace | some step in steps}

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

# An agent (through the MCP door) asked: its disruptive actions wait for a human.
needs_approval if {
	allow
	agent
	input.action in agent_approval_actions
	not approved
}

# Data without the list (an older bundle on an OPA server) keeps the shipped
# one: a missing setting never lets an agent drain unattended.
default agent_approval_actions := ["cordon-drain", "mark-reboot", "evict-pods"]

agent_approval_actions := cfg.agents.approval_actions if is_array(cfg.agents.approval_actions)

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

# An exhausted error budget (input.slo, see the SLO section below): disruptive
# actions wait for a human.
needs_approval if {
	allow
	budget_exhausted
	input.action in slo_approval_actions
	not approved
}

default dry_run := false

dry_run if cfg.force_dry_run == true

reasons := sort(deny) if count(deny) > 0

reasons := array.concat([sprintf("allowed: %v on %v/%v", [input.action, input.target.kind, input.target.name])], sort(notes)) if count(deny) == 0

decision := {"allow": allow, "reasons": reasons, "needs_approval": needs_approval, "dry_run": dry_run}

# -- what may be done at all ------------------------------------------------

deny contains msg if {
	is_string(input.approval.approved_by)
	input.approval.approved_by != ""
	approver_refused
	msg := sprintf("%v is not an approver", [input.approval.approved_by])
}

deny contains msg if {
	not cfg.actions[input.action]
	msg := sprintf("unknown action %v", [input.action])
}

deny contains msg if {
	action := cfg.actions[input.action]
	some step in steps
	not step.kind in action.kinds
	msg := sprintf("action %v may not touch a %v", [input.action, step.kind])
}

deny contains msg if {
	action := cfg.actions[input.action]
	some step in steps
	not step.verb in action.verbs
	msg := sprintf("action %v may not %v", [input.action, step.verb])
}

deny contains msg if {
	count(steps) > cfg.actions[input.action].max_steps
	msg := sprintf("plan has %v steps; action %v allows at most %v", [count(steps), input.action, cfg.actions[input.action].max_steps])
}

deny contains "plan has no steps" if {
	count(steps) == 0
}

# -- where: namespaces and nodes that are off limits ------------------------

protected_namespace(ns) if ns in cfg.protected_namespaces

protected_namespace(ns) if {
	some prefix in cfg.protected_namespace_prefixes
	startswith(ns, prefix)
}

protected_namespace(ns) if ns == input.self_namespace

deny contains msg if {
	some ns in namespaces
	protected_namespace(ns)
	msg := sprintf("namespace %v is protected", [ns])
}

deny contains msg if {
	some step in steps
	step.kind == "Node"
	step.name in cfg.protected_nodes
	msg := sprintf("node %v is off limits", [step.name])
}

deny contains msg if {
	node := params.node
	node in cfg.protected_nodes
	msg := sprintf("node %v is off limits", [node])
}

# -- which nodes: GPU nodes only, never the control plane (issue 15) ---------
# input.facts.nodes comes from the cluster (guard/targets.py): labels, GPU
# capacity, control-plane role of every node the plan touches or names.

plan_nodes contains step.name if {
	some step in steps
	step.kind == "Node"
}

plan_nodes contains input.target.name if input.target.kind == "Node"

plan_nodes contains name if {
	some key in ["node", "hostname"]
	name := params[key]
	is_string(name)
	name != ""
}

default node_facts := {}

node_facts := input.facts.nodes if is_object(input.facts.nodes)

control_plane(f) if f.control_plane == true

control_plane(f) if {
	some label in items(cfg, "control_plane_labels")
	is_string(f.labels[label])
}

deny contains msg if {
	some name in plan_nodes
	not node_facts[name].found == true
	msg := sprintf("node %s: no facts from the cluster (not found or not read); node actions are refused without them", [name])
}

deny contains msg if {
	some name in plan_nodes
	control_plane(node_facts[name])
	msg := sprintf("node %s is a control-plane node: never touched", [name])
}

deny contains msg if {
	some name in plan_nodes
	f := node_facts[name]
	f.found == true
	num(f, "gpu_capacity") <= 0
	msg := sprintf("node %s has no GPU capacity: node actions apply only to GPU nodes", [name])
}

# -- which workloads: restarts only of inference engines in inference
# namespaces (an allow list, issue 15) ----------------------------------------

restart_actions := {"rollout-restart", "delete-pod", "reschedule-pod"}

default ns_facts := {}

ns_facts := input.facts.namespaces if is_object(input.facts.namespaces)

default workload_facts := {}

workload_facts := input.facts.workloads if is_object(input.facts.workloads)

inference_namespace(ns) if ns in items(cfg, "inference_namespaces")

inference_namespace(ns) if {
	is_string(cfg.inference_namespace_label)
	ns_facts[ns].labels[cfg.inference_namespace_label] == "true"
}

deny contains msg if {
	input.action in restart_actions
	some ns in namespaces
	not protected_namespace(ns) # denied already, for a stronger reason
	not inference_namespace(ns)
	msg := sprintf("namespace %s is not an inference namespace (label it %v=true or list it in inference_namespaces): restarts happen only there", [ns, cfg.inference_namespace_label])
}

engine_workload(w) if {
	some key in items(cfg, "engine_label_keys")
	is_string(w.labels[key])
}

engine_workload(w) if {
	some key in items(cfg, "engine_label_keys")
	is_string(w.template_labels[key])
}

engine_workload(w) if {
	some image in items(w, "images")
	some pattern in items(cfg, "engine_images")
	contains(lower(image), lower(pattern))
}

deny contains "restart of an unknown workload: no facts from the cluster" if {
	input.action in restart_actions
	count(workload_facts) == 0
}

deny contains msg if {
	input.action in restart_actions
	some ref, w in workload_facts
	not w.found == true
	msg := sprintf("%s: not found in the cluster", [ref])
}

deny contains msg if {
	input.action in restart_actions
	some ref, w in workload_facts
	w.found == true
	not engine_workload(w)
	msg := sprintf("%s is not an inference engine (no engine label, no known engine image): only inference engines are restarted", [ref])
}

# -- how much: cooldowns, rate limits, circuit breaker ----------------------

cooldown_hit if {
	n := stats.target_actions_in_window
	is_number(n)
	n >= cfg.actions[input.action].max_per_target_in_window
}

deny contains msg if {
	cooldown_hit
	not cooldown_relaxed
	msg := sprintf("cooldown: %v already acted on %v time(s) in the window (limit %v)", [input.target.name, stats.target_actions_in_window, cfg.actions[input.action].max_per_target_in_window])
}

deny contains msg if {
	limit := cfg.actions[input.action].max_per_window
	n := stats.action_count_in_window
	is_number(n)
	n >= limit
	msg := sprintf("rate limit: %v %v action(s) in the window (limit %v)", [n, input.action, limit])
}

deny contains msg if {
	limit := cfg.limits.cluster_max_per_window
	n := stats.cluster_actions_in_window
	is_number(n)
	n >= limit
	msg := sprintf("cluster-wide rate limit: %v action(s) in the window (limit %v)", [n, limit])
}

deny contains msg if {
	limit := cfg.actions[input.action].max_evictions
	num(params, "evict_count") > limit
	msg := sprintf("plan evicts %v pods; action %v allows at most %v", [params.evict_count, input.action, limit])
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
	msg := sprintf("circuit breaker: %v of %v GPU nodes would be cordoned (limit %v%%)", [after, total, cfg.limits.max_cordoned_gpu_nodes_percent])
}

deny contains msg if {
	input.action == "scale-out"
	to := num(params, "to_replicas")
	to > cfg.limits.max_replicas
	msg := sprintf("scale to %v replicas exceeds the policy maximum %v", [to, cfg.limits.max_replicas])
}

deny contains msg if {
	input.action == "scale-out"
	to := num(params, "to_replicas")
	to > num(params, "max_replicas")
	msg := sprintf("scale to %v replicas exceeds the workload maximum %v", [to, params.max_replicas])
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

# -- agents: who asked, and how often ---------------------------------------
# The MCP door sets input.actor.kind = "agent" with the client's name, an
# optional model and the agent's reason; a webhook or event cannot (the
# pipeline never reads it from an event). Agents are limited on their own
# counts (stats.agent_*: their requests acted on, in flight or awaiting a
# human in the window) besides every limit above; a human's approval of the
# very remediation lifts the agent limits (not the others).

agent if input.actor.kind == "agent"

deny contains "an agent's request needs a reason" if {
	agent
	not non_empty_string(input.actor.reason)
}

non_empty_string(s) if {
	is_string(s)
	trim_space(s) != ""
}

deny contains msg if {
	agent
	not approved
	limit := cfg.agents.max_per_window
	n := stats.agent_actions_in_window
	is_number(n)
	n >= limit
	msg := sprintf("agent rate limit: agents requested %v action(s) in the window (limit %v)", [n, limit])
}

deny contains msg if {
	agent
	not approved
	limit := cfg.agents.max_per_client_per_window
	n := stats.agent_client_actions_in_window
	is_number(n)
	n >= limit
	msg := sprintf("agent rate limit: %v requested %v action(s) in the window (limit %v)", [input.actor.client, n, limit])
}

deny contains msg if {
	agent
	some action in items(cfg.agents, "forbidden_actions")
	input.action == action
	msg := sprintf("agents may not request %v", [action])
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
	real_date(t)
}

# A day that exists (no 30 February, 29 February in leap years only) in a
# year whose instants fit in nanoseconds since 1970 (1678 to 2261). Parsing
# any other date is an error in both engines, which regorus raises out of
# the whole evaluation and OPA turns into "undefined": checked here first,
# the two decide alike (such a bound is simply not a time).
real_date(t) if {
	regex.match(`^(16[7-9][0-9]|1[7-9][0-9]{2}|2[0-2][0-9]{2})-`, t)
	year := to_number(substring(t, 0, 4))
	year >= 1678
	year <= 2261
	real_day(year, substring(t, 5, 5))
}

real_day(_, month_day) if regex.match(`^(01|03|05|07|08|10|12)-(0[1-9]|[12][0-9]|3[01])$`, month_day)

real_day(_, month_day) if regex.match(`^(04|06|09|11)-(0[1-9]|[12][0-9]|30)$`, month_day)

real_day(_, month_day) if regex.match(`^02-(0[1-9]|1[0-9]|2[0-8])$`, month_day)

real_day(year, "02-29") if {
	year % 4 == 0
	year % 100 != 0
}

real_day(year, "02-29") if year % 400 == 0

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
	msg := sprintf("action %v runs only in a maintenance window", [input.action])
}

# -- error budgets: input.slo (issue 16) ---------------------------------------
# The target's SLO as Prometheus has it (clients/prometheus.py, from Sloth or
# Pyrra recording rules): {"available": true, "service", "slo", "burn_rates":
# {"5m": n, "1h": n, "6h": n, ...}, "error_budget_remaining": n (a ratio of
# the period's budget, <= 0 when spent)}. Prometheus down, slow or without
# data: {"available": false, "reason"}. No SLO configured for the target: no
# input.slo at all, and nothing here fires.
#
# A rule that tightens (approval when the budget is spent) needs the SLO to be
# read; a rule that relaxes (a fast burn lifts the per-target cooldown for
# low-risk fixes) never fires without it (fail closed), and says so.

slo_available if {
	is_object(input.slo)
	input.slo.available == true
}

default slo_reason := "no reason given"

slo_reason := input.slo.reason if is_string(input.slo.reason)

default slo_name := "(unnamed)"

slo_name := input.slo.service if is_string(input.slo.service)

# Missing settings (an older bundle) keep the shipped lists; a missing
# threshold never relaxes anything.
default slo_approval_actions := ["cordon-drain", "mark-reboot", "evict-pods", "reschedule-pod"]

slo_approval_actions := cfg.slo.exhausted_approval_actions if is_array(cfg.slo.exhausted_approval_actions)

default slo_exhausted_at := 0

slo_exhausted_at := cfg.slo.exhausted_budget_remaining if is_number(cfg.slo.exhausted_budget_remaining)

default slo_bypass_actions := []

slo_bypass_actions := cfg.slo.cooldown_bypass_actions if is_array(cfg.slo.cooldown_bypass_actions)

burn_rate(w) := input.slo.burn_rates[w] if is_number(input.slo.burn_rates[w])

budget_exhausted if {
	slo_available
	remaining := input.slo.error_budget_remaining
	is_number(remaining)
	remaining <= slo_exhausted_at
}

# Every window in fast_burn_windows burns at fast_burn_rate or more (the
# classic page: 5m and 1h at 14.4x, 2% of a 30-day budget in an hour).
fast_burn if {
	slo_available
	threshold := cfg.slo.fast_burn_rate
	is_number(threshold)
	windows := items(cfg.slo, "fast_burn_windows")
	count(windows) > 0
	burning := [w | some w in windows; burn_rate(w) >= threshold]
	count(burning) == count(windows)
}

cooldown_relaxed if {
	input.action in slo_bypass_actions
	fast_burn
}

deny contains msg if {
	cooldown_hit
	input.action in slo_bypass_actions
	is_object(input.slo)
	not slo_available
	msg := sprintf("slo: unavailable (%v): cooldown not relaxed", [slo_reason])
}

# What an allowed decision adds to its reasons.
notes contains msg if {
	budget_exhausted
	input.action in slo_approval_actions
	msg := sprintf("slo: %v error budget exhausted (%v remaining): %v needs a human's approval", [slo_name, input.slo.error_budget_remaining, input.action])
}

notes contains msg if {
	cooldown_hit
	cooldown_relaxed
	msg := sprintf("slo: %v burning fast (%v at %v or more): cooldown bypassed", [slo_name, concat(", ", items(cfg.slo, "fast_burn_windows")), cfg.slo.fast_burn_rate])
}
