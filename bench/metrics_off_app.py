"""The remediation app with its metrics switched off (remediation.metrics
records nothing): the bench's in-run baseline for the cost of metrics."""

from typing import Any


def create_app() -> Any:
    from remediation import metrics
    from remediation.app import create_app as remediation_app

    metrics.set_enabled(False)
    return remediation_app()
