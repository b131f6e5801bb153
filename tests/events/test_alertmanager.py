"""Alertmanager webhook -> CloudEvents: identity, types, extensions, validation, storms."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from remediation.errors import InvalidInput
from remediation.events.alertmanager import alertmanager_to_events
from remediation.events.binding import event_dict, parse_http, to_binary
from remediation.model import TYPE_ALERT_FIRING, TYPE_ALERT_RESOLVED

from . import load_fixture

POD = "vllm-llama-7b-6d4f8b9c7-x2x9k"


def firing():
    return load_fixture("alertmanager-v4-firing.json")


def reject(payload, attribute, **kw):
    with pytest.raises(InvalidInput) as err:
        alertmanager_to_events(payload, **kw)
    assert err.value.attribute == attribute, str(err.value)
    return err.value


def test_firing_alert_becomes_one_event_with_attributes_and_extensions():
    seen = []

    def routes(name, labels):
        seen.append((name, dict(labels)))
        return "restart-engine"

    [event] = alertmanager_to_events(firing(), routes=routes)
    assert event.get_type() == TYPE_ALERT_FIRING
    assert event.get_source() == "/alertmanager/remediation"
    assert event.get_subject() == "VLLMEngineHung"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_time() == datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert {n: event.get_extension(n) for n in
            ("alertname", "severity", "namespace", "cluster", "remediation")} == {
        "alertname": "VLLMEngineHung", "severity": "critical", "namespace": "llm-serving",
        "cluster": "gpu-east", "remediation": "restart-engine"}
    assert seen == [("VLLMEngineHung", firing()["alerts"][0]["labels"])]
    assert len(event.get_id()) == 32


def test_data_carries_the_alert_and_the_group_context():
    [event] = alertmanager_to_events(firing())
    data = event.get_data()
    assert data["alert"] == firing()["alerts"][0]
    assert data["group"] == {
        "groupKey": '{}/{severity="critical"}:{alertname="VLLMEngineHung"}',
        "externalURL": "http://alertmanager-0.monitoring:9093",
        "truncatedAlerts": 0,
        "notification_reason": "first notification",
        "receiver": "remediation",
        "status": "firing",
        "groupLabels": {"alertname": "VLLMEngineHung"},
        "commonLabels": firing()["commonLabels"],
        "commonAnnotations": firing()["commonAnnotations"],
        "routeLabels": {"severity": "critical"},
    }


def test_no_routes_or_empty_route_means_no_remediation_extension():
    [event] = alertmanager_to_events(firing())
    assert event.get_extension("remediation") is None
    [event] = alertmanager_to_events(firing(), routes=lambda n, labels: "")
    assert event.get_extension("remediation") is None


def test_resends_and_ha_peers_produce_the_same_source_and_id():
    first = alertmanager_to_events(firing())[0]
    resend = firing()
    resend["notification_reason"] = "repeat interval elapsed"
    peer = firing()
    peer["externalURL"] = "http://alertmanager-1.monitoring:9093"
    peer["alerts"][0]["annotations"]["summary"] = "re-rendered annotation"
    for other in (firing(), resend, peer):
        [event] = alertmanager_to_events(other)
        assert (event.get_source(), event.get_id()) == (first.get_source(), first.get_id())
    assert event_dict(alertmanager_to_events(firing())[0]) == event_dict(first)


def test_a_new_firing_of_the_same_alert_is_a_new_event():
    later = firing()
    later["alerts"][0]["startsAt"] = "2026-11-02T08:00:00Z"
    assert alertmanager_to_events(later)[0].get_id() != alertmanager_to_events(firing())[0].get_id()


def test_resolved_alert_gets_resolved_type_end_time_and_a_different_id():
    [resolved] = alertmanager_to_events(load_fixture("alertmanager-v4-resolved.json"))
    [fired] = alertmanager_to_events(firing())
    assert resolved.get_type() == TYPE_ALERT_RESOLVED
    assert resolved.get_time() == datetime(2026, 11, 1, 10, 12, 30, tzinfo=UTC)
    assert resolved.get_id() != fired.get_id()
    assert resolved.get_source() == fired.get_source()


def test_type_follows_each_alert_not_the_group_status():
    payload = firing()
    gone = copy.deepcopy(payload["alerts"][0])
    gone.update(status="resolved", endsAt="2026-11-01T10:05:00Z", fingerprint="ffff")
    payload["alerts"].append(gone)
    types = [e.get_type() for e in alertmanager_to_events(payload)]
    assert types == [TYPE_ALERT_FIRING, TYPE_ALERT_RESOLVED]


def test_older_alertmanager_payload_is_accepted():
    payload = load_fixture("alertmanager-v4-old.json")
    del payload["truncatedAlerts"]
    [event] = alertmanager_to_events(payload)
    group = event.get_data()["group"]
    assert group["notification_reason"] is None
    assert group["routeLabels"] == {}
    assert group["truncatedAlerts"] is None
    assert event.get_extension("cluster") == "gpu-west"  # from k8s_cluster


def test_missing_fingerprint_falls_back_to_sorted_labels():
    a, b = firing(), firing()
    del a["alerts"][0]["fingerprint"]
    del b["alerts"][0]["fingerprint"]
    b["alerts"][0]["labels"] = dict(reversed(list(b["alerts"][0]["labels"].items())))
    assert alertmanager_to_events(a)[0].get_id() == alertmanager_to_events(b)[0].get_id()
    b["alerts"][0]["labels"]["pod"] = "vllm-other"
    assert alertmanager_to_events(a)[0].get_id() != alertmanager_to_events(b)[0].get_id()


def test_unparseable_or_zero_times_leave_time_absent():
    payload = load_fixture("alertmanager-v4-resolved.json")
    payload["alerts"][0]["endsAt"] = "0001-01-01T00:00:00Z"
    assert alertmanager_to_events(payload)[0].get_time() is None
    payload = firing()
    payload["alerts"][0]["startsAt"] = "yesterday"
    [event] = alertmanager_to_events(payload)
    assert event.get_time() is None and "time" not in event_dict(event)


def test_events_survive_the_binary_binding():
    [event] = alertmanager_to_events(firing(), routes=lambda n, labels: "restart-engine")
    [back] = parse_http(*to_binary(event))
    assert event_dict(back) == event_dict(event)


def test_empty_alert_list_gives_no_events():
    payload = firing()
    payload["alerts"] = []
    assert alertmanager_to_events(payload) == []


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("version", ["3", 4, None, "5"])
def test_only_webhook_version_4(version):
    payload = firing()
    payload["version"] = version
    reject(payload, "version")


def test_payload_must_be_an_object():
    reject(["alerts"], "payload")


@pytest.mark.parametrize("path,value,attribute", [
    (("receiver",), None, "receiver"),
    (("receiver",), 3, "receiver"),
    (("alerts",), {"a": 1}, "alerts"),
    (("alerts",), None, "alerts"),
    (("status",), "pending", "status"),
    (("truncatedAlerts",), "0", "truncatedAlerts"),
    (("truncatedAlerts",), -1, "truncatedAlerts"),
    (("groupKey",), 7, "groupKey"),
    (("commonLabels",), ["x"], "commonLabels"),
    (("groupLabels", "alertname"), 1, "groupLabels.alertname"),
    (("alerts", 0), "not an alert", "alerts[0]"),
    (("alerts", 0, "status"), "pending", "alerts[0].status"),
    (("alerts", 0, "status"), None, "alerts[0].status"),
    (("alerts", 0, "startsAt"), None, "alerts[0].startsAt"),
    (("alerts", 0, "startsAt"), 1762000000, "alerts[0].startsAt"),
    (("alerts", 0, "endsAt"), 0, "alerts[0].endsAt"),
    (("alerts", 0, "fingerprint"), 12, "alerts[0].fingerprint"),
    (("alerts", 0, "labels"), "alertname=X", "alerts[0].labels"),
    (("alerts", 0, "labels", "severity"), 2, "alerts[0].labels.severity"),
    (("alerts", 0, "labels", "alertname"), "x" * 1025, "alerts[0].labels.alertname"),
    (("alerts", 0, "labels", "alertname"), "Hung\r\nX-Injected: 1",
     "alerts[0].labels.alertname"),
    (("alerts", 0, "annotations", "summary"), {"nested": True},
     "alerts[0].annotations.summary"),
])
def test_wrong_types_and_missing_fields_name_the_attribute(path, value, attribute):
    payload = firing()
    target = payload
    for key in path[:-1]:
        target = target[key]
    if value is None:
        target.pop(path[-1], None) if isinstance(target, dict) else None
    else:
        target[path[-1]] = value
    reject(payload, attribute)


@pytest.mark.parametrize("label,value", [
    ("namespace", "../../etc"),
    ("namespace", "kube-system/x"),
    ("namespace", "a b"),
    ("namespace", "LLM-Serving"),
    ("namespace", "n" * 64),
    ("pod", "../secret"),
    ("pod", "a b"),
    ("deployment", "x/y"),
    ("node", "gpu node"),
    ("cluster", "../prod"),
    ("k8s_cluster", "east/../../west"),
])
def test_hostile_labels_reject_the_whole_payload(label, value):
    payload = firing()
    bad = copy.deepcopy(payload["alerts"][0])
    bad["labels"][label] = value
    bad["fingerprint"] = "badbadbadbad"
    payload["alerts"].append(bad)  # one good alert, one hostile: all rejected
    err = reject(payload, f"alerts[1].labels.{label}")
    assert str(err).startswith(f"alerts[1].labels.{label}: not a valid")


def test_too_many_alerts_is_rejected():
    payload = firing()
    payload["alerts"] = payload["alerts"] * 11
    assert "limit of 10" in str(reject(payload, "alerts", max_alerts=10))


# ------------------------------------------------------------------ storms


def test_a_20000_alert_group_converts_with_unique_ids_and_shared_group_context():
    payload = firing()
    template = payload["alerts"][0]
    alerts = []
    for i in range(20_000):
        alert = dict(template)
        alert["labels"] = dict(template["labels"], pod=f"vllm-llama-7b-{i}")
        alert["fingerprint"] = f"{i:016x}"
        alerts.append(alert)
    payload["alerts"] = alerts
    events = alertmanager_to_events(payload, routes=lambda n, labels: "restart-engine")
    assert len(events) == 20_000
    assert len({e.get_id() for e in events}) == 20_000
    assert {e.get_source() for e in events} == {"/alertmanager/remediation"}
    assert events[-1].get_data()["alert"]["labels"]["pod"] == "vllm-llama-7b-19999"
    assert events[0].get_data()["group"] is events[-1].get_data()["group"]
