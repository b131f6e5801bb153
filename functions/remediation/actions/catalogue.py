"""The one explicit catalogue: function name -> remediation spec."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from . import drain_gpu_node, rebalance_gpu_pods, restart_engine, scale_engine
from .base import Remediation

CATALOGUE: Mapping[str, Remediation] = MappingProxyType({
    r.name: r
    for r in (
        restart_engine.REMEDIATION,
        drain_gpu_node.REMEDIATION,
        rebalance_gpu_pods.REMEDIATION,
        scale_engine.REMEDIATION,
    )
})
