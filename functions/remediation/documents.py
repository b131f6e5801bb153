"""Replay documents: what ``remediate replay``, the demo and game days read.

A document is an Alertmanager webhook payload, a Splunk webhook payload, a
structured CloudEvent, or a JSON array of any of them. The adapters stamp
each event's ``remediation`` extension from the ``routes`` given (the
caller's: the settings' routes file, or a game-day scenario's), which the
pipeline then trusts. Pure apart from reading files.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .events.alertmanager import alertmanager_to_events
from .events.binding import event_from_dict, load_json
from .events.splunk import splunk_to_event
from .routing import Routes


def detect_events(doc: Any, *, where: str, routes: Routes) -> list[Any]:
    """CloudEvents from one replay document (any supported shape), routed by
    ``routes``."""

    def one(item: Any, at: str) -> list[Any]:
        if not isinstance(item, dict):
            raise InvalidInput(f"{at}: expected a JSON object", "document")
        if "specversion" in item:
            return [event_from_dict(item)]
        if "alerts" in item and "version" in item:
            return alertmanager_to_events(item, routes=lambda n, labels: routes.function_for(
                n, labels=labels))
        if "sid" in item and "result" in item:
            return [splunk_to_event(item, routes=lambda n, _l: routes.function_for(n, splunk=True))]
        raise InvalidInput(f"{at}: not an Alertmanager payload, a Splunk payload or a "
                           "structured CloudEvent", "document")

    if isinstance(doc, list):
        if not doc:
            raise InvalidInput(f"{where}: empty array", "document")
        out: list[Any] = []
        for i, item in enumerate(doc):
            out.extend(one(item, f"{where}[{i}]"))
        return out
    return one(doc, where)


def read_documents(paths: Sequence[str]) -> list[tuple[str, Any]]:
    """(path, parsed JSON) for each path; ``-`` reads standard input."""
    docs = []
    for p in paths:
        try:
            text = sys.stdin.read() if p == "-" else Path(p).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"{p}: {exc.strerror}", "path") from None
        except UnicodeDecodeError:
            raise InvalidInput(f"{p}: not UTF-8 text", "path") from None
        docs.append((p, load_json(text, p, "path")))
    return docs


def demo_dir() -> Path:
    """The bundled demo: a GPU fleet snapshot and its events."""
    return Path(str(resources.files("remediation").joinpath("defaults/demo")))
