"""Splunk webhook -> CloudEvent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from remediation.errors import InvalidInput
from remediation.events.binding import event_dict, parse_http, to_structured
from remediation.events.splunk import result_labels, splunk_to_event
from remediation.model import TYPE_SPLUNK_RESULT

from . import load_fixture

SID = "scheduler__admin__search__RMD5a1b2_at_1762000000_42"


def payload():
    return load_fixture("splunk-null-search-multivalue.json")


def reject(p, attribute):
    with pytest.raises(InvalidInput) as err:
        splunk_to_event(p)
    assert err.value.attribute == attribute, str(err.value)
    return err.value


def test_null_search_name_and_multivalue_result():
    seen = []

    def routes(name, labels):
        seen.append((name, dict(labels)))
        return ""

    event = splunk_to_event(payload(), routes=routes)
    assert event.get_type() == TYPE_SPLUNK_RESULT
    assert event.get_source() == "/splunk/search"
    assert event.get_id().startswith(SID + ":")
    assert event.get_subject() is None
    assert event.get_extension("alertname") is None
    assert event.get_extension("remediation") is None
    assert event.get_extension("namespace") == "llm-serving"
    assert event.get_extension("cluster") == "gpu-east"
    assert event.get_time() == datetime.fromtimestamp(1762000000, tz=UTC)
    assert event.get_data() == payload()  # the whole payload, multivalue kept
    name, labels = seen[0]
    assert name == ""
    assert labels["message"] == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert labels["host"] == "gpu-node-7"
    assert "_raw" not in labels and "_time" not in labels


def test_search_name_becomes_alertname_subject_and_route_key():
    p = payload()
    p["search_name"] = "vLLM CUDA OOM"
    event = splunk_to_event(p, routes=lambda n, labels: "restart-engine" if n == "vLLM CUDA OOM"
                            else "")
    assert event.get_extension("alertname") == "vLLM CUDA OOM"
    assert event.get_subject() == "vLLM CUDA OOM"
    assert event.get_extension("remediation") == "restart-engine"


def test_id_is_deterministic_per_sid_and_row():
    assert splunk_to_event(payload()).get_id() == splunk_to_event(payload()).get_id()
    other_row = payload()
    other_row["result"]["pod"] = "vllm-llama-70b-tp-2"
    assert splunk_to_event(other_row).get_id() != splunk_to_event(payload()).get_id()
    assert event_dict(splunk_to_event(payload())) == event_dict(splunk_to_event(payload()))


def test_app_names_the_source():
    p = payload()
    p["app"] = None
    assert splunk_to_event(p).get_source() == "/splunk/search"
    p["app"] = "gpu ops/x"
    assert splunk_to_event(p).get_source() == "/splunk/gpu%20ops%2Fx"


def test_result_may_be_empty_and_time_may_be_absent():
    p = payload()
    p["result"] = {}
    event = splunk_to_event(p)
    assert event.get_time() is None and event.get_extension("namespace") is None


def test_round_trip_through_structured_mode():
    event = splunk_to_event(payload())
    [back] = parse_http(*to_structured(event))
    assert event_dict(back) == event_dict(event)


@pytest.mark.parametrize("key,value,attribute", [
    ("sid", None, "sid"),
    ("sid", "", "sid"),
    ("sid", 42, "sid"),
    ("search_name", 7, "search_name"),
    ("search_name", ["a"], "search_name"),
    ("app", {"x": 1}, "app"),
    ("owner", 1, "owner"),
    ("result", "host=gpu-node-7", "result"),
    ("result", {"count": 8}, "result.count"),
    ("result", {"tags": ["a", 1]}, "result.tags"),
    ("result", {"nested": {"a": "b"}}, "result.nested"),
    ("result", {"namespace": "../../etc"}, "result.namespace"),
    ("result", {"namespace": ["ok-ns", "x"], "pod": "a b"}, "result.pod"),
])
def test_wrong_types_and_hostile_values_name_the_attribute(key, value, attribute):
    p = payload()
    if value is None:
        del p[key]
    else:
        p[key] = value
    reject(p, attribute)


def test_payload_must_be_an_object():
    reject("sid=1", "payload")


def test_result_labels_first_values_and_skips():
    labels = result_labels({"a": ["1", "2"], "b": [], "_raw": "x", "long": "y" * 2000,
                            "host": "gpu-node-7"})
    assert labels == {"a": "1", "host": "gpu-node-7"}
