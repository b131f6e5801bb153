"""Scale out an inference engine whose KV cache is saturated, bounded.

Input: an alert such as ``VLLMKVCacheSaturated`` (rule on
``vllm:kv_cache_usage_perc`` — older vLLM ``vllm:gpu_cache_usage_perc`` —
near 1 with a growing ``vllm:num_requests_waiting``) naming ``namespace`` and
``deployment`` (or ``pod``/``inferenceservice``: resolved to the owning
Deployment as restart-engine resolves it, :mod:`.kit.workload`).

Sanity check on the values, when the alert carries them (labels or
annotations ``kv_cache_usage`` / ``kv_cache_usage_perc`` /
``gpu_cache_usage_perc``, and ``waiting`` / ``num_requests_waiting``): a
cache usage below ``options.min_kv_cache_usage`` (default 0.9; a value above
1 is read as a percentage) or fewer waiting requests than
``options.min_waiting`` (default 1) is not saturation: NoPlan. Without
values the alert rule is trusted (and the plan says so).

Plan (action ``scale-out``, verb ``scale``, body ``{"spec":{"replicas":N}}``):
``N = current + options.step`` (default 1), capped by the maximum: the
Deployment's annotation ``inferenceremediation.io/max-replicas`` and/or
``options.max_replicas`` (both set: the smaller). No maximum: NoPlan "no
maximum set". Only as many new replicas as fit: each needs the pod template's
GPU request on one schedulable GPU node that accepts it (first-fit over free
GPUs after pending GPU pods are placed); none fits: NoPlan. A previous
scale-out whose replicas are not ready yet also gives NoPlan (no pile-up of
Pending pods). Deployments owned by KServe (label
``serving.kserve.io/inferenceservice``) are refused: KServe would revert the
replica count. There is no automatic scale-in; resolved alerts do nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..events.names import check_namespace
from ..model import NoPlan, ObjectRef, Plan, Step, freeze
from ..records import LedgerStatus
from .base import ActionSpec, PlanContext, Remediation, Rule, VaultRole, remediation_key
from .kit import checks
from .kit.gpu import GpuPlacement, gpu_request
from .kit.options import number
from .kit.workload import KSERVE_LABEL, NAMESPACE_LABELS, POD_LABELS, resolve_workload

NAME = "scale-engine"
MAX_REPLICAS_ANNOTATION = "inferenceremediation.io/max-replicas"
KV_KEYS = ("kv_cache_usage", "kv_cache_usage_perc", "gpu_cache_usage_perc")
WAITING_KEYS = ("waiting", "num_requests_waiting")
#: how far back the ledger is searched for an attempt that died unrecorded
ATTEMPT_LOOKBACK_SECONDS = 86400.0


def _no(reason: str, target: ObjectRef | None = None) -> NoPlan:
    return NoPlan(NAME, (reason,), target)


def _value(ctx: PlanContext, keys: tuple[str, ...]) -> float | None:
    for source in (ctx.signal.labels, ctx.signal.annotations):
        for key in keys:
            raw = source.get(key)
            if raw:
                try:
                    return float(raw)
                except ValueError:
                    continue
    return None


def _max_replicas(ctx: PlanContext, deployment: Mapping[str, Any]) -> tuple[int | None, str]:
    found: list[tuple[int, str]] = []
    ann = (deployment["metadata"].get("annotations") or {}).get(MAX_REPLICAS_ANNOTATION)
    if ann is not None and str(ann).strip().isdigit():
        found.append((int(ann), f"annotation {MAX_REPLICAS_ANNOTATION}"))
    if ctx.options.get("max_replicas") is not None:
        found.append((int(number(ctx.options, "max_replicas", 0)),
                      "options.max_replicas"))
    if not found:
        return None, ""
    return min(found)


def _already_scaled(ctx: PlanContext, key: str, target: ObjectRef,
                    current: int) -> NoPlan | None:
    """Did an earlier attempt for this incident scale, then die before it
    could record it? The scale subresource carries no mark of ours (a restart
    has its incident annotation, a cordon its owner annotation), so the mark
    is the ledger's record of that attempt: claimed (never finished) with the
    plan it was about to apply. Replicas already at its ``to_replicas`` mean
    it took effect: a second scale-out for the same incident would be a
    second action."""
    for rec in ctx.history(str(target), ATTEMPT_LOOKBACK_SECONDS):
        if rec.key != key or rec.status is not LedgerStatus.CLAIMED:
            continue
        to = rec.params.get("to_replicas")
        if isinstance(to, int) and not isinstance(to, bool) and current >= to:
            return NoPlan(NAME, (f"{target} already has {current} replicas: an earlier attempt "
                                 f"for this incident scaled it to {to} before it could record "
                                 "it",), target, already_done=True)
    return None


def plan_scale(ctx: PlanContext) -> Plan | NoPlan:
    s = ctx.signal
    if s.status != "firing":
        return _no("resolved alert: no automatic scale-in")
    raw_ns = s.label(*NAMESPACE_LABELS)
    if not raw_ns:
        return _no("alert names no namespace")
    ns = check_namespace(raw_ns, "labels.namespace")
    resolved, _ = resolve_workload(ctx, ns, function=NAME)
    if isinstance(resolved, NoPlan):
        return NoPlan(NAME, resolved.reasons, resolved.target)
    target = resolved
    if target.kind != "Deployment":
        return _no(f"{target}: only Deployments are scaled", target)
    dep = ctx.facts.get("Deployment", ns, target.name)
    if dep is None:
        return _no(f"{target} not found", target)
    if KSERVE_LABEL in (dep["metadata"].get("labels") or {}):
        return _no(f"{target} is managed by KServe: raise the InferenceService's minReplicas "
                   "instead (KServe would revert a direct scale)", target)

    reasons: list[str] = []
    kv, waiting = _value(ctx, KV_KEYS), _value(ctx, WAITING_KEYS)
    if kv is not None and kv > 1:
        kv = kv / 100
    min_kv = number(ctx.options, "min_kv_cache_usage", 0.9)
    min_waiting = number(ctx.options, "min_waiting", 1)
    if kv is not None and kv < min_kv:
        return _no(f"not saturated: KV-cache usage {kv:.2f} < {min_kv:.2f}", target)
    if waiting is not None and waiting < min_waiting:
        return _no(f"not saturated: {waiting:g} requests waiting (< {min_waiting:g})", target)
    if kv is None and waiting is None:
        reasons.append("alert carries no KV-cache/waiting values: trusting the alert rule")

    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    current = int(spec.get("replicas", 1))
    done = _already_scaled(ctx, remediation_key(NAME, s, target), target, current)
    if done is not None:
        return done
    ready = int(status.get("readyReplicas", 0) or 0)
    if ready < current:
        return _no(f"{target}: only {ready} of {current} replicas ready; a previous scale-out "
                   "or rollout is still in progress", target)
    maximum, max_source = _max_replicas(ctx, dep)
    if maximum is None:
        return _no(f"{target}: no maximum set (annotation {MAX_REPLICAS_ANNOTATION} or "
                   "options.max_replicas)", target)
    if current >= maximum:
        return _no(f"{target} is already at its maximum of {maximum} replicas ({max_source})",
                   target)
    step = max(1, int(number(ctx.options, "step", 1)))
    wanted = min(current + step, maximum) - current
    template = (spec.get("template") or {}).get("spec") or {}
    per_replica = gpu_request(template)
    placement = GpuPlacement(ctx.facts)
    free_before = placement.total_free(template)
    fits = [placement.place(template) for _ in range(wanted)] if per_replica > 0 else []
    placed = [n for n in fits if n]
    adding = len(placed) if per_replica > 0 else wanted
    if adding == 0:
        return _no(f"{target}: no GPU capacity for a new replica ({per_replica} GPU(s) each; "
                   f"{free_before} free on schedulable GPU nodes, none with room)", target)
    if adding < wanted:
        reasons.append(f"only {adding} of {wanted} new replicas fit on free GPUs")
    new = current + adding
    body = {"spec": {"replicas": new}}
    why = f"{s.name or 'alert'}: KV cache saturated with requests waiting"
    step_obj = Step("scale", "Deployment", ns, target.name,
                    f"{why}: scale {current} -> {new} (max {maximum})", freeze(body))
    reasons.insert(0, f"scale {target} from {current} to {new} replicas (max {maximum} from "
                      f"{max_source}); new replicas fit on {', '.join(placed) or 'any node'}")
    return Plan(NAME, "scale-out", target, (step_obj,), tuple(reasons),
                remediation_key(NAME, s, target),
                freeze({"incident": s.incident, "from_replicas": current, "to_replicas": new,
                        "added_replicas": adding, "step": step, "max_replicas": maximum,
                        "max_source": max_source, "gpus_per_replica": per_replica,
                        "gpus_needed": per_replica * adding, "free_gpus": free_before,
                        "placements": placed, "kv_cache_usage": kv, "waiting": waiting}))


REMEDIATION = Remediation(
    name=NAME,
    summary="Scale out a KV-cache-saturated engine by a step, up to a maximum, only when GPU "
            "capacity exists (no automatic scale-in)",
    purpose="Scale an LLM-serving Deployment (KV-cache saturation).",
    planner=plan_scale,
    actions=(ActionSpec("scale-out", checks.scaled_out, relative=True),),
    labels=(NAMESPACE_LABELS, ("deployment",), POD_LABELS, ("inferenceservice", "isvc"),
            KV_KEYS, WAITING_KEYS),
    rbac=(
        Rule(("apps",), ("deployments",), ("get",)),
        Rule(("apps",), ("deployments/scale",), ("get", "patch")),
        Rule(("",), ("nodes", "pods"), ("get", "list")),
        Rule(("",), ("namespaces",), ("get",)),
        Rule(("",), ("events",), ("create",)),
    ),
    vault=VaultRole(rules=(
        Rule(("apps",), ("deployments/scale",), ("get", "patch")),
        Rule(("apps",), ("deployments",), ("get",)),
        Rule(("",), ("events",), ("create",)),
    )),
    policy_data={
        "scale-out": {"kinds": ["Deployment", "StatefulSet"], "verbs": ["scale"], "max_steps": 1,
                      "max_per_target_in_window": 4, "max_per_window": 20, "approval": False},
    },
)
