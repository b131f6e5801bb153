"""The real stand for game days: a scenario's objects seeded into a real
control plane (``components.ControlPlane``: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok), the product acting as its own
identity ("remediator", whose requests the audit log tells apart), the end
state read back from the API server and the writes from its audit log.

Seeding keeps every object the scenario names under its own name, and makes
the real controllers own them as they would have made them:

* nodes are kwok's fake nodes (its annotation; kwok makes them Ready);
* a controller's pods are created first, as orphans pinned to their nodes
  (``spec.nodeName``, as the scheduler had placed them), then their
  controller, which adopts them: a ReplicaSet (its pod template taken from
  its Deployment, created paused until its ReplicaSet exists, so the
  Deployment controller finds it as its current ReplicaSet instead of making
  its own), a DaemonSet (its pods labelled with its first template
  generation) or a StatefulSet (its pods carry the identity and the current
  revision the StatefulSet controller gives them; the revision is learnt from
  a scale-zero copy in a scratch namespace);
* kinds the API server does not serve but the scenario has (KServe's
  InferenceService) get a minimal CustomResourceDefinition;
* statuses are the cluster's own (kwok, the controllers), never the
  snapshot's.

Setup fails, saying which, when the real controllers replaced a seeded pod:
then the scenario would not run on the objects it names. Objects the
controllers make later (a rollout's new pods, an evicted pod's replacement)
have generated names, as on any cluster: a scenario's later events name
them with ``current_pod_of``, resolved through :meth:`RealStand.list_objects`.

Verification waits real time (``RealTimeClock``): the scenario's wall clock
is unchanged, but a rollout is polled while the controllers do it.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from remediation.gameday import RealTimeClock, Scenario, VirtualClock, Write, scenario_settings
from remediation.settings import KubeSettings, Settings, VerifySettings

from tests.realstack.components import KWOK_NODE_ANNOTATION, REMEDIATOR_TOKEN, ControlPlane
from tests.realstack.fleet import wait_for

#: the identity the product acts as; only its requests are its writes
PRODUCT_USER = "remediator"
SCRATCH_NS = "gameday-scratch"
_WRITE_VERBS = {"create": "create", "update": "update", "patch": "patch", "delete": "delete",
                "deletecollection": "delete"}
#: CRDs for kinds a snapshot may hold that a bare control plane does not serve
_CRDS = {("serving.kserve.io", "InferenceService"): ("inferenceservices", "inferenceservice",
                                                     ["isvc"])}
_DROP_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
                  "selfLink", "ownerReferences", "deletionTimestamp")


def _owner(obj: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in obj["metadata"].get("ownerReferences") or []
                 if r.get("controller")), None)


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as one would create it: no server-set metadata, no owners,
    no status (a Node keeps its capacity: kwok reports the rest)."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    for key in _DROP_METADATA:
        meta.pop(key, None)
    status = out.pop("status", None)
    if out["kind"] == "Node" and status:
        out["status"] = {k: v for k, v in status.items() if k in (
            "capacity", "allocatable", "nodeInfo")}
    return out


def _ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


class RealStand:
    live = True

    def __init__(self, plane: ControlPlane, verify_deadline: float = 60.0) -> None:
        self.plane = plane
        self.verify_deadline = verify_deadline
        self.workdir = Path(tempfile.mkdtemp(prefix="gameday-real-"))
        self._mark = 0
        self._kinds: dict[str, tuple[str, str, bool]] = {}  # kind -> (base, plural, namespaced)
        self._plurals: dict[tuple[str, str], str] = {}  # (group, plural) -> kind
        self.seeded: dict[tuple[str, str, str], str] = {}  # (kind, ns, name) -> uid

    def clock(self, start: float) -> VirtualClock:
        return RealTimeClock(start)

    # --- setup -----------------------------------------------------------------

    def setup(self, scenario: Scenario) -> Settings:
        self.seed(scenario.objects)
        self._mark = self.plane.audit_log.stat().st_size
        kubeconfig = self.plane.write_kubeconfig(PRODUCT_USER, REMEDIATOR_TOKEN)
        base = Settings(dry_run=False, kube=KubeSettings(kubeconfig=str(kubeconfig), timeout=10),
                        verify=VerifySettings(deadline=self.verify_deadline, interval=0.5))
        settings = scenario_settings(base, scenario, self.workdir)
        if "REMEDIATION_DRY_RUN" not in scenario.settings:
            settings = replace(settings, dry_run=False)
        return settings

    def seed(self, objects: Iterable[dict[str, Any]]) -> None:
        objs = [o for o in objects if o.get("kind") != "List"]
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for o in objs:
            by_kind.setdefault(o["kind"], []).append(o)
        self._crds(objs)
        self._discover()
        for ns in by_kind.pop("Namespace", []):
            self._namespace(ns)
        for n in by_kind.get("Node", []):
            node = _clean(n)
            node["metadata"].setdefault("annotations", {}).update(
                {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"})
            self._create(node)
        self._nodes_ready([n["metadata"]["name"] for n in by_kind.pop("Node", [])])

        deployments = {(d["metadata"]["namespace"], d["metadata"]["name"]): d
                       for d in by_kind.get("Deployment", [])}
        created: dict[tuple[str, str, str], dict[str, Any]] = {}
        for d in by_kind.pop("Deployment", []):
            body = _clean(d)
            body["spec"]["paused"] = True  # until its ReplicaSet is there
            created[("Deployment", d["metadata"]["namespace"], d["metadata"]["name"])] = \
                self._create(body)

        kinds = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
                 for o in objs}
        revisions = {(s["metadata"]["namespace"], s["metadata"]["name"]): self._sts_revision(s)
                     for s in by_kind.get("StatefulSet", [])}
        pods = by_kind.pop("Pod", [])
        for p in pods:
            self._create(self._orphan_pod(p, kinds, revisions))
        self._pods_ready(pods)

        for rs in by_kind.pop("ReplicaSet", []):
            self._create(self._replicaset(rs, deployments, created))
        for kind in ("StatefulSet", "DaemonSet"):
            for o in by_kind.pop(kind, []):
                self._create(_clean(o))
        for rest in by_kind.values():
            for o in rest:
                self._create(_clean(o))
        for (_, ns, name) in created:
            if not deployments[(ns, name)]["spec"].get("paused"):
                r = self.plane.request("PATCH", self._path("Deployment", ns, name),
                                       {"spec": {"paused": False}},
                                       content_type="application/merge-patch+json")
                assert r.status_code == 200, f"resuming Deployment {ns}/{name}: {r.text}"
        self._settled(pods, created, by_kind.get("PodDisruptionBudget", []))

    def _crds(self, objs: list[dict[str, Any]]) -> None:
        for o in objs:
            group, _, version = o["apiVersion"].rpartition("/")
            spec = _CRDS.get((group, o["kind"]))
            if spec is None or self.plane.get(f"/apis/{group}/{version}").status_code == 200:
                continue
            plural, singular, short = spec
            self.plane.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", {
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.{group}"},
                "spec": {"group": group, "scope": "Namespaced",
                         "names": {"plural": plural, "singular": singular, "kind": o["kind"],
                                   "listKind": f"{o['kind']}List", "shortNames": short},
                         "versions": [{"name": version, "served": True, "storage": True,
                                       "subresources": {"status": {}},
                                       "schema": {"openAPIV3Schema": {
                                           "type": "object",
                                           "x-kubernetes-preserve-unknown-fields": True}}}]}})
            wait_for(f"{o['apiVersion']} {o['kind']} to be served",
                     lambda base=f"/apis/{group}/{version}", kind=o["kind"]: self._serves(
                         base, kind), timeout=30)

    def _serves(self, base: str, kind: str) -> bool:
        r = self.plane.get(base)
        return r.status_code == 200 and any(res["kind"] == kind
                                            for res in r.json().get("resources", []))

    def _discover(self) -> None:
        bases = ["/api/v1"] + [
            f"/apis/{v['groupVersion']}" for g in self.plane.read("/apis")["groups"]
            for v in g["versions"]]
        for base in bases:
            group = base.split("/")[2] if base.startswith("/apis/") else ""
            for r in self.plane.read(base)["resources"]:
                if "/" in r["name"]:
                    continue
                self._plurals.setdefault((group, r["name"]), r["kind"])
                self._kinds.setdefault(r["kind"], (base, r["name"], r["namespaced"]))

    def _path(self, kind: str, ns: str, name: str = "") -> str:
        if kind not in self._kinds:
            raise AssertionError(f"the API server does not serve {kind}: the real stand "
                                 "cannot seed it (a CRD the stand does not know)")
        base, plural, namespaced = self._kinds[kind]
        where = f"{base}/namespaces/{ns}/{plural}" if namespaced else f"{base}/{plural}"
        return f"{where}/{name}" if name else where

    def _create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        out = self.plane.create(self._path(obj["kind"], meta.get("namespace", "")), obj)
        self.seeded[(obj["kind"], meta.get("namespace", ""), meta["name"])] = \
            out["metadata"]["uid"]
        return out

    def _namespace(self, ns: dict[str, Any]) -> None:
        name = ns["metadata"]["name"]
        if self.plane.get(f"/api/v1/namespaces/{name}").status_code == 404:
            self._create(_clean(ns))
            return
        meta = {k: ns["metadata"][k] for k in ("labels", "annotations") if k in ns["metadata"]}
        if meta:
            r = self.plane.request("PATCH", f"/api/v1/namespaces/{name}", {"metadata": meta},
                                   content_type="application/merge-patch+json")
            assert r.status_code == 200, r.text

    def _nodes_ready(self, names: list[str]) -> None:
        def check() -> list[str]:
            items = {n["metadata"]["name"]: n for n in self.plane.read("/api/v1/nodes")["items"]}
            waiting = [n for n in names if n not in items or not _ready(items[n]) or any(
                t["key"] == "node.kubernetes.io/not-ready"
                for t in items[n]["spec"].get("taints") or [])]
            return [] if waiting else names
        wait_for("kwok to make the scenario's nodes Ready", check, timeout=60)

    def _sts_revision(self, sts: dict[str, Any]) -> str:
        """The revision the StatefulSet controller will give ``sts``'s pods:
        learnt from a scale-zero copy of it (same name and template, so the
        same revision name) in a scratch namespace, deleted after."""
        if self.plane.get(f"/api/v1/namespaces/{SCRATCH_NS}").status_code == 404:
            self.plane.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": SCRATCH_NS}})
        copy_ = _clean(sts)
        copy_["metadata"]["namespace"] = SCRATCH_NS
        copy_["spec"]["replicas"] = 0
        name = copy_["metadata"]["name"]
        self.plane.create(f"/apis/apps/v1/namespaces/{SCRATCH_NS}/statefulsets", copy_)
        path = f"/apis/apps/v1/namespaces/{SCRATCH_NS}/statefulsets/{name}"
        rev: str = wait_for(f"the revision of StatefulSet {name}", lambda: self.plane.read(
            path).get("status", {}).get("updateRevision"), timeout=30)
        self.plane.request("DELETE", path)
        return rev

    def _orphan_pod(self, pod: dict[str, Any], objs: dict[tuple[str, str, str], Any],
                    revisions: dict[tuple[str, str], str]) -> dict[str, Any]:
        """The pod as its controller would have made it, without its owner
        (the controller adopts it when it is created)."""
        body = _clean(pod)
        meta, ns = body["metadata"], body["metadata"]["namespace"]
        owner = _owner(pod)
        if owner is None or (owner["kind"], ns, owner["name"]) not in objs:
            return body  # no controller, or one the scenario does not have: a bare pod
        labels = meta.setdefault("labels", {})
        if owner["kind"] == "DaemonSet":
            labels["pod-template-generation"] = "1"
        elif owner["kind"] == "StatefulSet":
            sts = objs[("StatefulSet", ns, owner["name"])]
            ordinal = meta["name"].rsplit("-", 1)[-1]
            labels.update({"controller-revision-hash": revisions[(ns, owner["name"])],
                           "statefulset.kubernetes.io/pod-name": meta["name"],
                           "apps.kubernetes.io/pod-index": ordinal})
            body["spec"]["hostname"] = meta["name"]
            if sts["spec"].get("serviceName"):
                body["spec"]["subdomain"] = sts["spec"]["serviceName"]
        return body

    def _pods_ready(self, pods: list[dict[str, Any]]) -> None:
        def check() -> bool:
            waiting = []
            for p in pods:
                r = self.plane.get(self._path("Pod", p["metadata"]["namespace"],
                                              p["metadata"]["name"]))
                if r.status_code != 200 or not _ready(r.json()):
                    waiting.append(p["metadata"]["name"])
            return not waiting
        wait_for("kwok to run the scenario's pods", check, timeout=60)

    def _replicaset(self, rs: dict[str, Any],
                    deployments: dict[tuple[str, str], dict[str, Any]],
                    created: dict[tuple[str, str, str], dict[str, Any]]) -> dict[str, Any]:
        """``rs`` with its Deployment's pod template (as the API server
        defaulted it) and its real owner, so the Deployment controller takes
        it for its current ReplicaSet."""
        body = _clean(rs)
        ns = body["metadata"]["namespace"]
        owner = _owner(rs)
        if owner is None or owner["kind"] != "Deployment" or (
                ns, owner["name"]) not in deployments:
            raise AssertionError(f"ReplicaSet {ns}/{body['metadata']['name']}: the real stand "
                                 "seeds ReplicaSets of the scenario's Deployments only")
        dep = created[("Deployment", ns, owner["name"])]
        template = copy.deepcopy(dep["spec"]["template"])
        pth = (body["metadata"].get("labels") or {}).get("pod-template-hash") or \
            body["spec"]["selector"]["matchLabels"].get("pod-template-hash")
        if pth:
            template["metadata"].setdefault("labels", {})["pod-template-hash"] = pth
        body["spec"]["template"] = template
        body["metadata"]["ownerReferences"] = [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": owner["name"],
            "uid": dep["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        return body

    def _settled(self, pods: list[dict[str, Any]],
                 deployments: dict[tuple[str, str, str], dict[str, Any]],
                 pdbs: list[dict[str, Any]]) -> None:
        """Wait for the controllers to have taken what was seeded; fail when
        they replaced a seeded pod instead."""
        for (_, ns, name) in deployments:
            def rolled(ns: str = ns, name: str = name) -> bool:
                d = self.plane.read(self._path("Deployment", ns, name))
                st = d.get("status") or {}
                return (st.get("observedGeneration", 0) >= d["metadata"]["generation"]
                        and st.get("replicas", 0) == d["spec"].get("replicas", 1))
            wait_for(f"Deployment {ns}/{name} to be observed", rolled, timeout=60)
        for p in pdbs:
            ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
            wait_for(f"the disruption controller to compute PDB {ns}/{name}",
                     lambda ns=ns, name=name: "disruptionsAllowed" in (self.plane.read(
                         self._path("PodDisruptionBudget", ns, name)).get("status") or {}),
                     timeout=60)
        owned = {}  # a ReplicaSet's or StatefulSet's pods: exactly the seeded ones
        for p in pods:
            ref = _owner(p)
            if ref is not None and ref["kind"] in ("ReplicaSet", "StatefulSet") and (
                    ref["kind"], p["metadata"]["namespace"], ref["name"]) in self.seeded:
                owned.setdefault((ref["kind"], p["metadata"]["namespace"], ref["name"]),
                                 set()).add(p["metadata"]["name"])
        for (kind, ns, name), want in owned.items():
            uid, deadline = self.seeded[(kind, ns, name)], time.monotonic() + 30
            while (have := self._owned_by(ns, uid)) != want:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{kind} {ns}/{name} owns {sorted(have)}, not the "
                                         f"seeded {sorted(want)}")
                time.sleep(0.25)
        time.sleep(1.0)  # a controller that would replace a pod has had its sync
        replaced = []
        for p in pods:
            ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
            r = self.plane.get(self._path("Pod", ns, name))
            now = r.json() if r.status_code == 200 else None
            if (now is None or now["metadata"]["uid"] != self.seeded[("Pod", ns, name)]
                    or now["metadata"].get("deletionTimestamp")):
                replaced.append(f"{ns}/{name}")
            elif ((ref := _owner(p)) is not None and (ref["kind"], ns, ref["name"]) in self.seeded
                  and _owner(now) is None):
                replaced.append(f"{ns}/{name} (not adopted by its {ref['kind']})")
        if replaced:
            raise AssertionError("the real controllers did not keep the seeded pods: "
                                 + ", ".join(replaced))

    def _owned_by(self, ns: str, uid: str) -> set[str]:
        return {q["metadata"]["name"] for q in self.plane.read(self._path("Pod", ns))["items"]
                if any(r.get("uid") == uid for r in q["metadata"].get("ownerReferences") or [])}

    # --- what the run did --------------------------------------------------------

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object now; one being deleted is waited for (up to 30 s):
        its end state is gone, on a real cluster a moment later."""
        path = self._path(kind, namespace, name)
        deadline = time.monotonic() + 30.0
        while True:
            r = self.plane.get(path)
            if r.status_code == 404:
                return None
            r.raise_for_status()
            obj: dict[str, Any] = r.json()
            if not obj["metadata"].get("deletionTimestamp") or time.monotonic() > deadline:
                return obj
            time.sleep(0.25)

    def list_objects(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        """The objects of ``kind`` in ``namespace`` now (terminating ones
        included: they carry their ``deletionTimestamp``)."""
        items: list[dict[str, Any]] = self.plane.read(self._path(kind, namespace))["items"]
        return items

    def writes(self) -> list[Write]:
        """The product's writes since setup, from the API server's audit log
        (its own identity only; dry runs left out)."""
        time.sleep(0.5)  # the last request's audit line is written as it completes
        with open(self.plane.audit_log, "rb") as f:
            f.seek(self._mark)
            lines = f.read().decode().splitlines()
        out = []
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            verb = _WRITE_VERBS.get(e.get("verb", ""))
            if (e.get("user", {}).get("username") != PRODUCT_USER or verb is None
                    or "dryRun=" in e.get("requestURI", "")):
                continue
            ref = e.get("objectRef") or {}
            sub = ref.get("subresource", "")
            if sub == "eviction":
                verb = "evict"
            elif sub == "scale":
                verb = "scale"
            kind = self._plurals.get((ref.get("apiGroup", ""), ref.get("resource", "")),
                                     ref.get("resource", ""))
            out.append(Write(verb, kind, ref.get("namespace", ""), ref.get("name", ""),
                             int((e.get("responseStatus") or {}).get("code", 0))))
        return out

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
