"""The one explicit catalogue: function name -> remediation spec."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from . import restart_engine
from .base import Remediation

CATALOGUE: Mapping[str, Remediation] = MappingProxyType({
    r.name: r
    for r in (
        restart_engine.REMEDIATION,
    )
})
