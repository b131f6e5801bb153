"""Batches: the cyclic garbage collector is paused while a large batch is
handled (a 20,000-alert group otherwise spends about 12% of its time in it)
and always runs again after, whatever happened."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from remediation.dispatch import LARGE_BATCH, handle_events
from remediation.events.alertmanager import alertmanager_to_events
from remediation.model import Outcome, Status


def group(n: int) -> list[Any]:
    alerts = [{"status": "firing", "labels": {"alertname": "VLLMEngineHung", "pod": f"p{i}"},
               "annotations": {}, "startsAt": "2026-11-01T10:00:00Z",
               "fingerprint": f"{i:016x}"} for i in range(n)]
    return alertmanager_to_events({"version": "4", "receiver": "r", "status": "firing",
                                   "alerts": alerts, "groupLabels": {}, "commonLabels": {},
                                   "commonAnnotations": {}, "externalURL": "http://am",
                                   "groupKey": "{}:{}"}, routes=None)


class Recording:
    """Stands in for the pipeline: records whether the collector ran."""

    def __init__(self, fail_at: int = -1) -> None:
        self.gc_enabled: list[bool] = []
        self.fail_at = fail_at

    def handle(self, signal: Any, **_: Any) -> Outcome:
        if len(self.gc_enabled) == self.fail_at:
            raise RuntimeError("boom")
        self.gc_enabled.append(gc.isenabled())
        return Outcome(status=Status.SKIPPED, function="", event_id=signal.event_id,
                       event_source=signal.source)


@pytest.mark.parametrize("n, paused", [(LARGE_BATCH - 1, False), (LARGE_BATCH, True)])
def test_large_batches_pause_the_collector_and_resume_it(n, paused):
    assert gc.isenabled()
    pipeline = Recording()
    outcomes = handle_events(pipeline, group(n), via="webhook")  # type: ignore[arg-type]
    assert len(outcomes) == n
    assert set(pipeline.gc_enabled) == {not paused}
    assert gc.isenabled()


def test_the_collector_resumes_when_a_batch_fails():
    with pytest.raises(RuntimeError):
        handle_events(Recording(fail_at=10), group(LARGE_BATCH), via="webhook")  # type: ignore[arg-type]
    assert gc.isenabled()
