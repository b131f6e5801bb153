"""Game days on the real control plane: every scenario in tests/scenarios/
run by the same runner and checked as the emulator tier checks it (outcomes,
end state read back from kube-apiserver, the product's writes from its audit
log), on a control plane of its own per scenario (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok): the circuit breaker counts
every GPU node of the cluster, so no other test's nodes may be there.

What differs from the emulator is the cluster's own doing, and is checked as
it is: the real controllers own the seeded objects (see
tests/realstack/gameday_stand.py), verification waits real time while a
rollout or a replacement really happens, and an evicted pod is gone once the
kubelet (kwok) has finished it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from remediation.gameday import load_scenario, run_scenario

from tests.realstack.components import (
    IN_CI,
    ComponentFailed,
    ComponentMissing,
    ControlPlane,
)
from tests.realstack.gameday_stand import RealStand

pytestmark = pytest.mark.realstack

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.yaml"))


@pytest.fixture
def fresh_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane for one scenario (about 8 s to start)."""
    plane = ControlPlane(tmp_path / "plane")
    try:
        plane.start()
    except ComponentMissing as exc:
        plane.close()
        if IN_CI:
            pytest.fail(f"realstack component missing in CI: {exc}", pytrace=False)
        pytest.skip(str(exc))
    except ComponentFailed as exc:
        plane.close()
        pytest.fail(f"realstack control plane did not start: {exc}", pytrace=False)
    except BaseException:
        plane.close()
        raise
    try:
        yield plane
    finally:
        plane.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_passes_on_the_real_control_plane(path, fresh_plane):
    stand = RealStand(fresh_plane)
    try:
        began = time.monotonic()
        report = run_scenario(load_scenario(path), stand)
        took = time.monotonic() - began
    finally:
        stand.close()
    assert report.passed, f"{report.render()}\n\n{fresh_plane.logs_tail()}"
    assert all(c.ok is True for c in report.checks), report.render()  # everything checked
    assert report.checks
    print(f"{path.stem}: {took:.1f} s on the real control plane")



@pytest.mark.timeout(300)
def test_the_restart_storm_names_the_pods_the_rollouts_made(fresh_plane):
    """Why the restart storm runs here: its alerts name the engine's pod as
    it is when each fires (``current_pod_of``). The first names the seeded
    pod; every later one a pod the real rollouts made (a generated name) on
    the node the alert says, which is where the scenario's spread put it."""
    path = next(p for p in SCENARIOS if p.stem == "08-restart-storm-escalates")
    stand = RealStand(fresh_plane)
    try:
        report = run_scenario(load_scenario(path), stand)
        seeded = {name for (kind, _, name) in stand.seeded if kind == "Pod"}
    finally:
        stand.close()
    assert report.passed, report.render()
    named = [r.rpartition(": ")[2] for d in report.deliveries for r in d.resolved]
    nodes = [r.rpartition(" on ")[2].partition(":")[0]
             for d in report.deliveries for r in d.resolved]
    assert nodes == ["gpu-node-1"] * 3 + ["gpu-node-2", "gpu-node-3"], report.render()
    assert named[0] == "vllm-llama-7b-6d4f8b9c7-x2x9k" and named[0] in seeded
    assert not seeded & set(named[1:]) and len(set(named)) == 5, report.render()
