"""The node a signal names."""

from __future__ import annotations

from ...events.names import check_name
from ...model import TYPE_SPLUNK_RESULT, Signal

#: where an alert names its node (dcgm-exporter, node-exporter, kube-state-metrics)
ALERT_NODE_LABELS = ("kubernetes_node", "node", "Hostname")
#: where a Splunk result names it (the kernel log line's host first)
SPLUNK_NODE_LABELS = ("host", "kubernetes_node", "node")


def node_from_signal(signal: Signal) -> str:
    """The node an alert or Splunk result names ("" when none); InvalidInput
    for a value that is not a node name."""
    names = SPLUNK_NODE_LABELS if signal.type == TYPE_SPLUNK_RESULT else ALERT_NODE_LABELS
    for label in names:
        value = signal.labels.get(label)
        if value:
            return check_name(value.lower() if label in ("Hostname", "host") else value,
                              f"labels.{label}")
    return ""
