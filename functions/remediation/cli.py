"""``remediate``: replay events by hand, serve the app, run the demo.

    remediate replay PATH... [--cluster SNAPSHOT] [--kubeconfig FILE] [--apply] [--json]
    remediate serve [--host H] [--port P]
    remediate demo
    remediate policy test [--policy-dir DIR]
    remediate vault setup [--definitions DIR]

Replay detects each file's shape: an Alertmanager webhook payload, a Splunk
webhook payload, a structured CloudEvent, or a JSON array of any of them
(``-`` reads standard input). Dry run unless ``--apply``. Exit codes: 0 every
event was processed (denied and skipped included), 1 some event needs a
retry (a dependency was unavailable), 2 invalid input (reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Sequence, TextIO

from .errors import InvalidInput, RemediationError
from .model import Outcome, Status
from .settings import KubeSettings, Settings

EXIT_OK, EXIT_RETRY, EXIT_INVALID = 0, 1, 2


def detect_events(doc: Any, *, where: str) -> list[Any]:
    """CloudEvents from one replay document (any supported shape)."""
    from .events.alertmanager import alertmanager_to_events
    from .events.binding import event_from_dict
    from .events.splunk import splunk_to_event
    from .routing import load_routes

    routes = load_routes(os.environ.get("REMEDIATION_ROUTES_FILE", ""))

    def one(item: Any, at: str) -> list[Any]:
        if not isinstance(item, dict):
            raise InvalidInput(f"{at}: expected a JSON object", "document")
        if "specversion" in item:
            return [event_from_dict(item)]
        if "alerts" in item and "version" in item:
            return alertmanager_to_events(item, routes=lambda n, _l: routes.function_for(n))
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
    docs = []
    for p in paths:
        try:
            text = sys.stdin.read() if p == "-" else Path(p).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"{p}: {exc.strerror}", "path") from None
        except UnicodeDecodeError:
            raise InvalidInput(f"{p}: not UTF-8 text", "path") from None
        try:
            docs.append((p, json.loads(text)))
        except ValueError as exc:
            raise InvalidInput(f"{p}: not valid JSON ({exc})", "path") from None
    return docs


def outcome_line(o: Outcome) -> dict[str, Any]:
    d = o.as_dict()
    return {
        "status": d["status"], "function": d["function"], "event_id": d["event_id"],
        "target": d["target"], "actions": d["actions"], "reasons": d["reasons"],
        "dry_run": d["dry_run"], "decision": d["decision"],
    }


def print_table(outcomes: list[Outcome], out: TextIO, labels: list[str] | None = None) -> None:
    rows = [("EVENT", "STATUS", "FUNCTION", "TARGET", "ACTIONS", "WHY")]
    for i, o in enumerate(outcomes):
        target = str(o.target) if o.target else "-"
        actions = ", ".join(f"{a['verb']} {a['kind']}/{a['name']}" for a in o.actions) or "-"
        why = "; ".join(o.reasons) or "-"
        label = labels[i] if labels else o.event_id[:12]
        rows.append((label, o.status.value, o.function or "-", target, actions, why))
    widths = [min(max(len(r[c]) for r in rows), cap) for c, cap in
              enumerate((34, 10, 15, 50, 40, 200))]
    for r in rows:
        cells = [(v if len(v) <= w else v[: w - 1] + "…").ljust(w) for v, w in zip(r, widths)]
        out.write("  ".join(cells).rstrip() + "\n")


def _settings_for_replay(args: argparse.Namespace) -> Settings:
    base = Settings.from_env(os.environ)
    kube: KubeSettings = base.kube
    if args.cluster:
        kube = replace(kube, snapshot=args.cluster)
    if args.kubeconfig:
        kube = replace(kube, kubeconfig=args.kubeconfig, snapshot="")
    return replace(base, dry_run=not args.apply, kube=kube)


def replay(paths: Sequence[str], settings: Settings, *, as_json: bool, out: TextIO,
           err: TextIO, labels: list[str] | None = None) -> int:
    from .dispatch import handle_events
    from .runtime import build_pipeline, close_pipeline

    try:
        events = [e for where, doc in read_documents(paths) for e in detect_events(doc, where=where)]
    except InvalidInput as exc:
        err.write(f"remediate: invalid input: {exc}\n")
        return EXIT_INVALID
    try:
        pipeline = build_pipeline(settings)
    except RemediationError as exc:
        err.write(f"remediate: cannot start: {exc}\n")
        return EXIT_INVALID
    try:
        outcomes = handle_events(pipeline, events, via="replay")
    finally:
        close_pipeline(pipeline)
    if as_json:
        for o in outcomes:
            out.write(json.dumps(outcome_line(o), sort_keys=True) + "\n")
    else:
        print_table(outcomes, out, labels)
    for o in outcomes:
        if o.status is Status.REJECTED:
            err.write(f"remediate: invalid event {o.event_id}: {'; '.join(o.reasons)}\n")
    if any(o.status is Status.REJECTED for o in outcomes):
        return EXIT_INVALID
    if any(o.status is Status.RETRY for o in outcomes):
        return EXIT_RETRY
    return EXIT_OK


def demo_dir() -> Path:
    return Path(str(resources.files("remediation").joinpath("defaults/demo")))


def demo(out: TextIO, err: TextIO) -> int:
    d = demo_dir()
    files = sorted(p for p in (d / "events").iterdir() if p.suffix == ".json")
    settings = replace(Settings.from_env({}), dry_run=True,
                       kube=KubeSettings(snapshot=str(d / "cluster.yaml")))
    out.write("inference-remediation demo: bundled alerts replayed against a snapshot of a\n"
              f"small GPU inference fleet ({d / 'cluster.yaml'}).\n"
              "Embedded Rego policy, in-memory ledger, plan only: nothing is applied.\n\n")
    labels: list[str] = []
    for f in files:
        n = len(detect_events(json.loads(f.read_text()), where=f.name))
        labels.extend([f.stem] * n)
    code = replay([str(f) for f in files], settings, as_json=False, out=out, err=err,
                  labels=labels)
    out.write("\nReplay any of them yourself: remediate replay "
              f"{files[0]} --cluster {d / 'cluster.yaml'} --json\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="remediate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("replay", help="replay events (dry run unless --apply)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--cluster", metavar="SNAPSHOT", help="plan against a snapshot file")
    p.add_argument("--kubeconfig", metavar="FILE", help="plan (and apply) against a cluster")
    p.add_argument("--apply", action="store_true", help="apply the plans (default: dry run)")
    p.add_argument("--json", action="store_true", help="one JSON outcome per line")
    s = sub.add_parser("serve", help="serve the HTTP app locally (waitress)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    sub.add_parser("demo", help="replay the bundled alerts against the bundled fleet")
    pol = sub.add_parser("policy", help="policy tools")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True)
    pt = pol_sub.add_parser("test", help="run the Rego unit tests with the embedded engine")
    pt.add_argument("--policy-dir", default="")
    v = sub.add_parser("vault", help="Vault tools")
    v_sub = v.add_subparsers(dest="vault_command", required=True)
    vs = v_sub.add_parser("setup", help="idempotent Vault set-up from vault/ definitions")
    vs.add_argument("--definitions", default="vault")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("REMEDIATION_LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.command == "replay":
        return replay(args.paths, _settings_for_replay(args), as_json=args.json,
                      out=sys.stdout, err=sys.stderr)
    if args.command == "demo":
        return demo(sys.stdout, sys.stderr)
    if args.command == "serve":
        import waitress

        from .app import create_app

        logging.getLogger().setLevel(logging.INFO)
        waitress.serve(create_app(), host=args.host, port=args.port, threads=8)
        return EXIT_OK
    if args.command == "policy":
        from .clients.rego import run_rego_tests

        results = run_rego_tests(args.policy_dir or None)
        failed = [r for r in results if not r[1]]
        for name, ok, message in results:
            sys.stdout.write(f"{'PASS' if ok else 'FAIL'} {name}{': ' + message if message else ''}\n")
        sys.stdout.write(f"{len(results) - len(failed)} passed, {len(failed)} failed\n")
        return 1 if failed or not results else EXIT_OK
    if args.command == "vault":
        from .clients.vault import setup_vault

        settings = Settings.from_env(os.environ)
        report = setup_vault(settings.vault, args.definitions)
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        return EXIT_OK
    return EXIT_INVALID


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
