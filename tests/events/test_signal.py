"""CloudEvent -> Signal, for adapter output and foreign events alike."""

from __future__ import annotations

import json

import pytest
from remediation.errors import InvalidInput
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import event_from_dict, parse_http, to_binary
from remediation.events.signal import signal_from_event
from remediation.events.splunk import splunk_to_event
from remediation.model import TYPE_ALERT_FIRING, TYPE_ALERT_RESOLVED, TYPE_SPLUNK_RESULT

from . import load_fixture

POD = "vllm-llama-7b-6d4f8b9c7-x2x9k"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def foreign(**over):
    """A hand-made structured CloudEvent with the alert data shape."""
    d = {
        "specversion": "1.0", "id": "kserve-1", "source": "/replay/operator",
        "type": TYPE_ALERT_FIRING, "time": "2026-11-01T10:05:00Z",
        "datacontenttype": "application/json", "namespace": "llm-serving",
        "traceparent": TRACEPARENT, "tracestate": "vendor=1",
        "data": {"alert": {
            "status": "firing",
            "labels": {"alertname": "KServeInferenceServiceHung", "namespace": "llm-serving",
                       "inferenceservice": "llama-70b"},
            "annotations": {"summary": "dead engine"},
            "startsAt": "2026-11-01T10:05:00Z", "fingerprint": "9e8d7c6b5a493827"}},
    }
    d.update(over)
    return {k: v for k, v in d.items() if v is not ...}


def with_labels(**labels):
    d = foreign()
    d["data"]["alert"]["labels"].update(labels)
    return event_from_dict(d)


def reject(event, attribute):
    with pytest.raises(InvalidInput) as err:
        signal_from_event(event)
    assert err.value.attribute == attribute, str(err.value)
    return err.value


def test_alertmanager_event_to_signal():
    [event] = alertmanager_to_events(load_fixture("alertmanager-v4-firing.json"))
    s = signal_from_event(event)
    assert (s.event_id, s.source, s.type) == (event.get_id(), "/alertmanager/remediation",
                                             TYPE_ALERT_FIRING)
    assert s.status == "firing" and s.name == "VLLMEngineHung"
    assert s.labels["pod"] == POD and s.labels["namespace"] == "llm-serving"
    assert s.annotations["runbook_url"].startswith("https://")
    assert s.starts_at == "2026-11-01T10:00:00.123456789Z"
    assert s.fingerprint == "c6a2f2b4e0a1d3f9"
    assert s.cluster == "gpu-east" and s.origin == "alertmanager"
    assert s.time == "2026-11-01T10:00:00.123456Z"
    assert s.data["group"]["receiver"] == "remediation"
    with pytest.raises(TypeError):
        s.labels["namespace"] = "kube-system"  # type: ignore[index]


def test_resolved_and_ha_peer_signals():
    [resolved] = alertmanager_to_events(load_fixture("alertmanager-v4-resolved.json"))
    s = signal_from_event(resolved)
    assert s.status == "resolved" and s.type == TYPE_ALERT_RESOLVED
    peer = load_fixture("alertmanager-v4-firing.json")
    peer["externalURL"] = "http://alertmanager-1:9093"
    a = signal_from_event(alertmanager_to_events(load_fixture("alertmanager-v4-firing.json"))[0])
    b = signal_from_event(alertmanager_to_events(peer)[0])
    assert a.incident == b.incident and a.incident == s.incident  # same alert, same incident


def test_old_payload_cluster_from_k8s_cluster_label():
    [event] = alertmanager_to_events(load_fixture("alertmanager-v4-old.json"))
    assert signal_from_event(event).cluster == "gpu-west"


def test_splunk_event_to_signal():
    s = signal_from_event(splunk_to_event(load_fixture("splunk-null-search-multivalue.json")))
    assert s.type == TYPE_SPLUNK_RESULT and s.origin == "splunk" and s.status == "firing"
    assert s.name == ""
    assert s.labels["host"] == "gpu-node-7"
    assert s.labels["message"] == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "_raw" not in s.labels
    assert s.cluster == "gpu-east"
    assert s.annotations["sid"].startswith("scheduler__admin")
    assert s.time == "2025-11-01T12:26:40Z"


def test_foreign_structured_event_to_signal():
    s = signal_from_event(event_from_dict(foreign()))
    assert s.origin == "cloudevent" and s.name == "KServeInferenceServiceHung"
    assert s.labels["inferenceservice"] == "llama-70b"
    assert s.traceparent == TRACEPARENT and s.tracestate == "vendor=1"
    assert s.time == "2026-11-01T10:05:00Z" and s.cluster == ""


def test_foreign_binary_event_and_json_text_data():
    event = event_from_dict(foreign())
    s = signal_from_event(parse_http(*to_binary(event))[0])
    assert s.labels["namespace"] == "llm-serving"
    as_text = event_from_dict(foreign(datacontenttype="text/plain",
                                      data=json.dumps(foreign()["data"])))
    assert signal_from_event(as_text).name == "KServeInferenceServiceHung"
    reject(event_from_dict(foreign(datacontenttype="text/plain", data="not json")), "data")


def test_namespace_extension_fills_a_missing_label():
    d = foreign()
    del d["data"]["alert"]["labels"]["namespace"]
    assert signal_from_event(event_from_dict(d)).labels["namespace"] == "llm-serving"


def test_alertname_extension_is_the_fallback_name():
    d = foreign(alertname="FromExtension")
    del d["data"]["alert"]["labels"]["alertname"]
    assert signal_from_event(event_from_dict(d)).name == "FromExtension"


def test_unknown_type_is_rejected():
    reject(event_from_dict(foreign(type="com.example.other")), "type")
    reject(event_from_dict(foreign(type="io.inferenceremediation.remediation.outcome.v1")),
           "type")


@pytest.mark.parametrize("label,value", [
    ("namespace", "../../etc"),
    ("namespace", "kube-system/x"),
    ("namespace", "a b"),
    ("exported_namespace", "UPPER"),
    ("pod", "../../etc/passwd"),
    ("pod", "kube-system/x"),
    ("statefulset", "a b"),
    ("deployment", "-leading-dash"),
    ("node", "x" * 254),
    ("cluster", "a/../b"),
])
def test_hostile_labels_are_rejected(label, value):
    d = foreign(namespace=...)
    d["data"]["alert"]["labels"][label] = value
    reject(event_from_dict(d), f"data.alert.labels.{label}")


def test_label_sizes_and_types():
    reject(with_labels(summary="x" * 1025), "data.alert.labels.summary")
    reject(with_labels(**{"k" * 317: "v"}), "data.alert.labels")
    d = foreign()
    d["data"]["alert"]["labels"]["count"] = 3
    reject(event_from_dict(d), "data.alert.labels.count")
    assert signal_from_event(with_labels(**{"k" * 316: "v" * 1024}))


def test_extensions_must_agree_with_labels():
    reject(event_from_dict(foreign(namespace="kube-system")), "namespace")
    reject(event_from_dict(foreign(namespace="Bad/Ns")), "namespace")
    d = foreign(cluster="gpu-west")
    d["data"]["alert"]["labels"]["cluster"] = "gpu-east"
    reject(event_from_dict(d), "cluster")
    assert signal_from_event(event_from_dict(foreign(cluster="gpu-west"))).cluster == "gpu-west"


def test_alert_status_must_agree_with_type():
    d = foreign()
    d["data"]["alert"]["status"] = "resolved"
    reject(event_from_dict(d), "data.alert.status")


@pytest.mark.parametrize("data,attribute", [
    (..., "data"),
    ([1, 2], "data"),
    ({"labels": {}}, "data.alert"),
    ({"alert": {"labels": {}, "startsAt": 5}}, "data.alert.startsAt"),
])
def test_missing_or_malformed_data(data, attribute):
    reject(event_from_dict(foreign(data=data)), attribute)


def test_splunk_typed_foreign_event_with_bad_result():
    d = foreign(type=TYPE_SPLUNK_RESULT, namespace=..., data={"sid": "x", "result": [1]})
    reject(event_from_dict(d), "data.result")
    d = foreign(type=TYPE_SPLUNK_RESULT, namespace=...,
                data={"sid": "x", "result": {"namespace": "a b"}})
    reject(event_from_dict(d), "data.result.namespace")
