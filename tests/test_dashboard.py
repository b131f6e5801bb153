"""The Grafana dashboard (issue 14, item 4), against a real Prometheus loaded
with what the app really exported.

The app handles real remediations (tests.test_metrics.exercise: applied and
verified, a duplicate, a denial, an approval, a Kubernetes 503, rejected
input, truncation) and the dead-letter function keeps dead letters; both are
scraped before and after. The scrapes become OpenMetrics with timestamps a
minute apart, ``promtool tsdb create-blocks-from openmetrics`` writes them
as TSDB blocks, Debian's ``prometheus`` serves them on 127.0.0.1, and every
panel's query (Grafana's ``$__rate_interval`` and ``$__range`` set to 2m)
must return data at the second scrape's time. No panel may name a metric the
app does not export.

One liberty, said here: prometheus_client creates a labelled series at its
first increment, so a counter or histogram series first seen in the second
scrape is written as 0 at the first (it was 0 then; Prometheus would have
had no sample, and ``rate()`` nothing, until the next scrape).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.prometheus_tools import tool
from tests.scrape import scrape
from tests.test_alertmanager_e2e import Stand, free_port
from tests.test_metrics import exercise, metrics_settings
from tests.test_self_monitoring import MONITORING, exported_names

DASHBOARD = MONITORING / "grafana-dashboard.json"
STEP = 60  # seconds between the two scrapes, as written into the TSDB
WINDOW = "2m"  # Grafana's $__rate_interval and $__range for the queries


def panel_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [(p["title"], t["expr"]) for p in doc["panels"] if p["type"] != "row"
            for t in p.get("targets", [])]


def _labels(labels: dict[str, str]) -> str:
    return ",".join('{}="{}"'.format(k, v.replace("\\", "\\\\").replace('"', '\\"'))
                    for k, v in sorted(labels.items()))


def openmetrics(scrapes: list[tuple[float, str, str]]) -> str:
    """Scrapes (time, service, text) as one OpenMetrics document with
    timestamps, each family's samples together, each series in time order."""
    types: dict[str, str] = {}
    series: dict[str, dict[tuple[str, str], dict[float, float]]] = {}
    times = sorted({t for t, _, _ in scrapes})
    for t, service, text in scrapes:
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            for s in family.samples:
                key = (s.name, _labels({**s.labels, "service": service}))
                series.setdefault(family.name, {}).setdefault(key, {})[t] = s.value
    lines = []
    for name, by_key in sorted(series.items()):
        kind = types[name]
        lines.append(f"# TYPE {name} {kind if kind in ('counter', 'gauge', 'histogram') else 'unknown'}")
        for (sample, labels), points in sorted(by_key.items()):
            for t in times:
                if t not in points and kind in ("counter", "histogram") and t < min(points):
                    points[t] = 0.0  # see the module docstring
            for t in sorted(points):
                lines.append(f"{sample}{{{labels}}} {points[t]!r} {t:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def test_every_panel_answers_from_what_the_app_exported(fleet, make_settings, serve_app,
                                                       tmp_path: Path) -> None:
    promtool, prometheus = tool("promtool"), tool("prometheus")
    settings = metrics_settings(make_settings, tmp_path)
    app = serve_app(settings)
    letters = serve_app(replace(make_settings(functions=("dead-letter",)), http=replace(
        settings.http, dead_letter_store=str(tmp_path / "dead-letters.sqlite"))))

    # two scrapes of each, written a minute apart, three hours ago (older than
    # Prometheus's head block, inside its retention)
    base = float(int(fleet_now() - 3 * 3600))
    scrapes = [(base, "restart-engine", scrape(app)), (base, "dead-letter", scrape(letters))]
    exercise(app, fleet)
    for n in range(2):
        resp = letters.post("/", headers={"ce-specversion": "1.0", "ce-id": f"lost-{n}",
                                          "ce-source": "/alertmanager/remediation",
                                          "ce-type": "io.inferenceremediation.alert.firing.v1",
                                          "Content-Type": "application/json"}, content=b"{}")
        assert resp.status_code == 202, resp.text
    scrapes += [(base + STEP, "restart-engine", scrape(app)),
                (base + STEP, "dead-letter", scrape(letters))]

    # the panels name only what the app exports, and what this run exported
    exported = exported_names()
    scraped = {s.name for _, _, text in scrapes
               for f in text_string_to_metric_families(text) for s in f.samples}
    queries = panel_queries()
    assert len(queries) >= 20
    for title, expr in queries:
        for name in re.findall(r"\b(remediation_\w+)", expr):
            assert name in exported, f"{title}: {name} is not exported by the app"
            assert name in scraped, f"{title}: {name} was not in this run's scrapes"

    source = tmp_path / "scrapes.om"
    source.write_text(openmetrics(scrapes))
    tsdb = tmp_path / "tsdb"
    import subprocess

    proc = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source),
                           str(tsdb)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tmp_path / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")

    stand = Stand(tmp_path)
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        stand.start("prometheus", [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tsdb}",
                                   "--storage.tsdb.retention.time=30d",
                                   f"--web.listen-address=127.0.0.1:{port}"],
                    ready=f"{url}/-/ready")
        empty = []
        for title, expr in queries:
            query = expr.replace("$__rate_interval", WINDOW).replace("$__range", WINDOW)
            answer = stand.client.get(f"{url}/api/v1/query",
                                      params={"query": query, "time": base + STEP}).json()
            assert answer["status"] == "success", (title, query, answer)
            if not answer["data"]["result"]:
                empty.append(f"{title}: {query}")
        assert empty == [], "panels without data:\n" + "\n".join(empty)

        # and the answers are the run's: one applied restart, one denial by rule
        def value(query: str) -> Any:
            result = stand.client.get(f"{url}/api/v1/query", params={
                "query": query, "time": base + STEP}).json()["data"]["result"]
            return [(r["metric"], float(r["value"][1])) for r in result]

        ((labels, denied),) = value('sum by (rule) (increase(remediation_policy_denials_total'
                                    '{service="restart-engine",rule="protected-namespace"}[2m]))')
        assert labels == {"rule": "protected-namespace"} and denied > 0
        assert value('max(remediation_dead_letters{service="dead-letter"})') == [({}, 2.0)]
        assert value('max(remediation_pending_approvals{service="restart-engine"})') == [({}, 1.0)]
    finally:
        stand.close()


def fleet_now() -> float:
    import time

    return time.time()
