"""Session fixtures of the realstack tier: one real control plane per session.

``control_plane`` starts etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok on loopback (see ``components.ControlPlane``) and
stops them all at the end of the session; their logs stay under pytest's
basetemp and the last lines of each are printed when a test fails. A
component that fails to start fails every test that needs it with its log
lines; with ``CI`` set a missing binary fails too (never a silent skip).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.realstack.components import (
    IN_CI,
    KWOK_NODE_ANNOTATION,
    ComponentFailed,
    ComponentMissing,
    ControlPlane,
    wait_until,
)

pytestmark = pytest.mark.realstack

_started: list[ControlPlane] = []
_failed: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.realstack)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    if _failed:
        pytest.fail(_failed[0], pytrace=False)
    root = tmp_path_factory.mktemp("realstack")
    plane = ControlPlane(root)
    try:
        plane.start()
    except ComponentMissing as exc:
        plane.close()
        if IN_CI:
            _failed.append(f"realstack component missing in CI: {exc}")
            pytest.fail(_failed[0], pytrace=False)
        pytest.skip(str(exc))
    except ComponentFailed as exc:
        plane.close()
        _failed.append(f"realstack control plane did not start: {exc}")
        pytest.fail(_failed[0], pytrace=False)
    except BaseException:
        plane.close()
        raise
    _started.append(plane)
    try:
        yield plane
    finally:
        plane.close()
        _started.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _started:
        report.sections.append(("realstack component logs", _started[0].logs_tail()))


# --- objects on the real cluster --------------------------------------------

GPU_LABELS = {
    "nvidia.com/gpu.present": "true",
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    "nvidia.com/gpu.count": "8",
    "nvidia.com/mig.strategy": "none",
    "node.kubernetes.io/instance-type": "p5.48xlarge",
}


def node(name: str, gpus: int = 8, labels: dict[str, str] | None = None,
         taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A Node kwok runs: Ready, with ``gpus`` allocatable nvidia.com/gpu."""
    capacity = {"cpu": "96", "memory": "1024Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "type": "kwok",
                  **(GPU_LABELS if gpus else {}), **(labels or {})}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": all_labels,
                     "annotations": {KWOK_NODE_ANNOTATION: "fake",
                                     "node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"taints": taints or []},
        "status": {"capacity": capacity, "allocatable": capacity,
                   "nodeInfo": {"kubeletVersion": "fake", "architecture": "amd64",
                                "operatingSystem": "linux"}},
    }


@pytest.fixture(scope="session")
def gpu_fleet(control_plane: ControlPlane) -> dict[str, list[str]]:
    """Four fake H100 nodes, a CPU node and a control-plane node, all Ready."""
    names = {"gpu": [f"rs-gpu-{i}" for i in range(4)], "cpu": ["rs-cpu-0"],
             "control-plane": ["rs-cp-0"]}
    for n in names["gpu"]:
        control_plane.create("/api/v1/nodes", node(n))
    control_plane.create("/api/v1/nodes", node("rs-cpu-0", gpus=0))
    control_plane.create("/api/v1/nodes", node(
        "rs-cp-0", gpus=0, labels={"node-role.kubernetes.io/control-plane": ""},
        taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]))
    def all_ready() -> bool:
        items = control_plane.read("/api/v1/nodes")["items"]
        ready = {i["metadata"]["name"] for i in items
                 if any(c["type"] == "Ready" and c["status"] == "True"
                        for c in i.get("status", {}).get("conditions", []))}
        return all(n in ready for group in names.values() for n in group)

    wait_until("kwok to make the fleet Ready", all_ready, None, timeout=60)
    return names


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace per test (labelled as an inference namespace), deleted after."""
    ns = f"rs-{uuid.uuid4().hex[:8]}"
    control_plane.create("/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"inferenceremediation.io/inference": "true"}}})
    try:
        yield ns
    finally:
        control_plane.request("DELETE", f"/api/v1/namespaces/{ns}")
        # The namespace controller deletes what was in it and kwok completes
        # the pods' deletion: wait, so the next test starts on an empty fleet.
        wait_until(f"namespace {ns} to be deleted", lambda: control_plane.get(
            f"/api/v1/namespaces/{ns}").status_code == 404, None, timeout=60)

