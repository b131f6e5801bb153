"""Reading what ``GET /metrics`` answered: samples by name and labels,
parsed with prometheus_client's own text parser (what a scrape reads)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` (exact label set); 0 when absent."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def total(text: str, name: str, **labels: Any) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples(text).items() if n == name and want <= set(ls))


def scrape(app: Any) -> str:
    resp = app.client.get(app.url + "/metrics")
    assert resp.status_code == 200, resp.text
    return str(resp.text)
