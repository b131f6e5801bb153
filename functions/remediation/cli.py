"""``remediate``: replay events by hand, serve the app, run the demo.

    remediate replay PATH... [--cluster SNAPSHOT] [--kubeconfig FILE] [--apply] [--json]
    remediate serve [--host H] [--port P] [--ledger FILE] [--sweep-every SECONDS]
    remediate sweep [--json]
    remediate demo
    remediate replay --from-dlq [ID...] [--store FILE] [--sink URL] [...]
    remediate dlq list [--store FILE] [--json]
    remediate policy test [--policy-dir DIR]
    remediate vault setup [--definitions DIR]
    remediate pending [--json]
    remediate gameday SCENARIO... [--json]
    remediate generate [--check] [--root DIR]
    remediate approve ID [--by NAME] [--kubeconfig FILE | --send URL [--function F]] [--json]
    remediate mcp [--cluster SNAPSHOT] [--kubeconfig FILE] [--apply]

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
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar, cast

from .documents import demo_dir, detect_events, read_documents
from .errors import InvalidInput, RemediationError
from .gameday.command import add_parser as add_gameday_parser
from .gameday.command import run_cli as run_gameday
from .model import Outcome, Status
from .routing import load_routes
from .settings import KubeSettings, Settings

T = TypeVar("T")

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_RETRY", "approve", "demo", "demo_dir", "main",
           "pending", "replay"]

EXIT_OK, EXIT_RETRY, EXIT_INVALID = 0, 1, 2


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
        cells = [(v if len(v) <= w else v[: w - 1] + "…").ljust(w)
                 for v, w in zip(r, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")


def _settings_for_replay(args: argparse.Namespace) -> Settings:
    base = Settings.from_env(os.environ)
    kube: KubeSettings = base.kube
    if args.cluster:
        kube = replace(kube, snapshot=args.cluster)
    if args.kubeconfig:
        kube = replace(kube, kubeconfig=args.kubeconfig, snapshot="")
    return replace(base, dry_run=not args.apply, kube=kube)


def _catalogue() -> Any:
    """The remediations (imported when a command needs them)."""
    from .actions.catalogue import CATALOGUE

    return CATALOGUE


def replay(paths: Sequence[str], settings: Settings, *, as_json: bool, out: TextIO,
           err: TextIO, labels: list[str] | None = None) -> int:
    from .dispatch import handle_events

    try:
        routes = load_routes(settings.routes_file, known=set(_catalogue()))
        events = [e for where, doc in read_documents(paths)
                  for e in detect_events(doc, where=where, routes=routes)]
    except InvalidInput as exc:
        err.write(f"remediate: invalid input: {exc}\n")
        return EXIT_INVALID
    outcomes, code = _with_pipeline(settings, err,
                                    lambda p: handle_events(p, events, via="replay"))
    if outcomes is None:
        return code
    return _report(outcomes, as_json=as_json, out=out, err=err, labels=labels)


def _with_pipeline(settings: Settings, err: TextIO,
                   work: Callable[[Any], T]) -> tuple[T | None, int]:
    """``work(pipeline)`` on a pipeline built for ``settings`` and closed
    after; ``(None, EXIT_INVALID)`` when it cannot be built (said on ``err``)."""
    from .runtime import build_pipeline, close_pipeline

    try:
        pipeline = build_pipeline(settings)
    except RemediationError as exc:
        err.write(f"remediate: cannot start: {exc}\n")
        return None, EXIT_INVALID
    try:
        return work(pipeline), EXIT_OK
    finally:
        close_pipeline(pipeline)


def _report(outcomes: list[Outcome], *, as_json: bool, out: TextIO, err: TextIO,
            labels: list[str] | None = None) -> int:
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


def _dead_letter_store(path: str) -> Any:
    from .guard.deadletters import DeadLetterStore

    if not path or not Path(path).exists():
        raise InvalidInput(f"no dead-letter store at {path or '(unset)'}: pass --store FILE or set "
                           "REMEDIATION_DEAD_LETTERS", "store")
    return DeadLetterStore(path)


def dlq_list(store_path: str, *, as_json: bool, out: TextIO) -> int:
    store = _dead_letter_store(store_path)
    try:
        letters = store.list()
    finally:
        store.close()
    if as_json:
        for d in letters:
            out.write(json.dumps(d.summary(), sort_keys=True) + "\n")
        return EXIT_OK
    rows = [("SEQ", "ID", "TYPE", "CODE", "FAILED AT", "ERROR")]
    rows += [(str(d.seq), d.id[:24], d.type.rsplit(".", 2)[-2] if "." in d.type else d.type,
              d.error_code, d.error_dest[:40], d.error_data.replace("\n", " ")[:60])
             for d in letters]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
    return EXIT_OK


def replay_dead_letters(ids: Sequence[str], store_path: str, settings: Settings, *,
                        sink: str, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Re-send dead letters to the broker (``sink``), or run them in-process."""
    from .events.binding import event_from_dict

    store = _dead_letter_store(store_path)
    try:
        letters = store.list(list(ids) or None)
    finally:
        store.close()
    if not letters:
        err.write("remediate: no matching dead letters\n")
        return EXIT_INVALID
    events = [event_from_dict(d.without_error_extensions()) for d in letters]
    if sink:
        from .clients.sink import send_all

        key = settings.sender_auth.hmac_key
        if key:  # the operator re-sends: signed afresh, or an old letter is refused as stale
            from .events.binding import new_event
            from .guard.sender_auth import sign_events

            events = sign_events(events, key.reveal(), now=time.time(), rebuild=new_event)

        deliveries = send_all(sink, events, timeout=settings.http.sink_timeout)
        for d in deliveries:
            out.write(json.dumps({"event_id": d.event_id, "delivered": d.ok, "status": d.status,
                                  "detail": d.detail}) + "\n")
        return EXIT_OK if all(d.ok for d in deliveries) else EXIT_RETRY
    from .dispatch import handle_events
    from .runtime import build_pipeline, close_pipeline

    pipeline = build_pipeline(settings)
    try:
        outcomes = handle_events(pipeline, events, via="replay")
    finally:
        close_pipeline(pipeline)
    return _report(outcomes, as_json=as_json, out=out, err=err)


def demo(out: TextIO, err: TextIO) -> int:
    d = demo_dir()
    files = sorted(p for p in (d / "events").iterdir() if p.suffix == ".json")
    settings = replace(Settings.from_env({}), dry_run=True,
                       kube=KubeSettings(snapshot=str(d / "cluster.yaml")))
    out.write("inference-remediation demo: bundled alerts replayed against a snapshot of a\n"
              f"small GPU inference fleet ({d / 'cluster.yaml'}).\n"
              "Embedded Rego policy, in-memory ledger, plan only: nothing is applied.\n\n")
    labels: list[str] = []
    routes = load_routes(settings.routes_file, known=set(_catalogue()))
    for f in files:
        n = len(detect_events(json.loads(f.read_text()), where=f.name, routes=routes))
        labels.extend([f.stem] * n)
    code = replay([str(f) for f in files], settings, as_json=False, out=out, err=err,
                  labels=labels)
    out.write("\nReplay any of them yourself: remediate replay "
              f"{files[0]} --cluster {d / 'cluster.yaml'} --json\n")
    return code


def default_ledger_path(env: Any = os.environ) -> str:
    """Where ``remediate serve`` keeps its ledger unless told otherwise."""
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "inference-remediation" / "ledger.sqlite")


IN_MEMORY = ("memory", ":memory:")


def serve_settings(args: argparse.Namespace, env: Any = os.environ) -> Settings:
    """``remediate serve`` acts on a live cluster: its ledger persists (a
    restart must not forget what was done). ``--ledger memory`` is accepted
    in dry run only."""
    settings = Settings.from_env(env)
    path = (args.ledger or settings.ledger.path or default_ledger_path(env)).strip()
    if path.lower() in IN_MEMORY:
        if not settings.dry_run:
            raise InvalidInput("refusing to act (REMEDIATION_DRY_RUN=false) with an in-memory "
                               "ledger: a restart would forget what was done and act again; "
                               "give --ledger FILE or REMEDIATION_LEDGER (a file, or "
                               "'kubernetes')", "ledger")
        path = ""
    elif path.lower() not in ("kubernetes", "k8s", "lease", "leases"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return replace(settings, ledger=replace(settings.ledger, path=path))


def sweep(settings: Settings, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Run what the ledger has scheduled and is due (recovery after the
    healthy delay): once; on Knative a PingSource asks the function instead."""
    from .dispatch import log_outcome

    _ledger_note(settings, err)
    outcomes, code = _with_pipeline(settings, err, lambda p: p.sweep())
    if outcomes is None:
        return code
    for o in outcomes:
        log_outcome(o, via="sweep")
    if not outcomes and not as_json:
        out.write("nothing is due\n")
        return EXIT_OK
    return _report(outcomes, as_json=as_json, out=out, err=err)


def _ledger_note(settings: Settings, err: TextIO) -> None:
    if not settings.ledger.path:
        err.write("remediate: REMEDIATION_LEDGER is not set: the ledger is in-memory, so "
                  "nothing another process parked is visible here (set it to the shared "
                  "SQLite file, or to 'kubernetes')\n")


def pending(settings: Settings, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    """List remediations waiting for a human's approval."""
    from .runtime import build_ledger

    _ledger_note(settings, err)
    ledger = build_ledger(settings)
    try:
        rows = ledger.pending(now=time.time())
    finally:
        ledger.close()
    for r in rows:
        line = {"id": r.key, "function": r.function, "action": r.action,
                "target": r.target, "event_id": r.event_id,
                "requested_at": _iso(r.updated_at), "expires_at": _iso(r.expires_at),
                "reasons": list(r.reasons)}
        if as_json:
            out.write(json.dumps(line, sort_keys=True) + "\n")
        else:
            out.write(f"{line['id']}  {line['action']:<15} {line['target']:<45} "
                      f"expires {line['expires_at']}\n")
    if not rows and not as_json:
        out.write("nothing waits for approval\n")
    return EXIT_OK


def approve(key: str, approver: str, settings: Settings, *, send_to: str, function: str,
            as_json: bool, out: TextIO, err: TextIO, expires_at: str = "") -> int:
    """Approve a pending remediation: here (this process runs the action with the
    configured cluster and credentials) or, with ``send_to``, by sending a
    signed approval event to the Broker or a function."""
    from .guard.approval import approval_data, check_names

    try:
        check_names(key, approver)
    except InvalidInput as exc:
        err.write(f"remediate: {exc}\n")
        return EXIT_INVALID
    if settings.approval.approvers and approver not in settings.approval.approvers:
        err.write(f"remediate: {approver} is not in REMEDIATION_APPROVERS\n")
        return EXIT_INVALID
    if send_to:
        secret = settings.approval.secret.reveal()
        if not secret:
            err.write("remediate: REMEDIATION_APPROVAL_SECRET is needed to sign the approval\n")
            return EXIT_INVALID
        if not expires_at:
            err.write("remediate: --expires-at is needed with --send: the approval is bound "
                      "to the request it approves (remediate pending shows its expires_at)\n")
            return EXIT_INVALID
        from .clients.sink import send
        from .events.binding import JSON_CONTENT_TYPE, SPECVERSION, new_event, validate_attributes
        from .model import TYPE_APPROVAL_GRANTED, stable_digest

        attrs = {"specversion": SPECVERSION, "type": TYPE_APPROVAL_GRANTED,
                 "source": "/remediate/cli", "id": stable_digest("approval", key, approver),
                 "datacontenttype": JSON_CONTENT_TYPE, "subject": key}
        if function:
            attrs["remediation"] = function
        event = new_event(validate_attributes(attrs),
                          approval_data(secret, key, approver, expires_at))
        delivery = send(send_to, event, timeout=settings.http.sink_timeout)
        out.write(json.dumps({"sent": delivery.ok, "status": delivery.status,
                              "detail": delivery.detail}) + "\n")
        return EXIT_OK if delivery.ok else EXIT_RETRY
    _ledger_note(settings, err)
    outcome, code = _with_pipeline(settings, err, lambda p: p.approve(key, approver, via="cli"))
    if outcome is None:
        return code
    if as_json:
        out.write(json.dumps(outcome.as_dict(), sort_keys=True, default=str) + "\n")
        return _exit_for(outcome)
    print_table([outcome], out)
    if outcome.verification:
        out.write(f"verification: {outcome.verification.get('result')}: "
                  f"{outcome.verification.get('detail')}\n")
    if outcome.status is Status.REJECTED:
        err.write(f"remediate: {'; '.join(outcome.reasons)}\n")
    return _exit_for(outcome)


def serve(args: argparse.Namespace) -> int:
    """The HTTP app under waitress, with a persistent ledger and a sweep thread."""
    import threading

    import waitress

    from .app import create_app
    from .runtime import build_pipeline

    logging.getLogger().setLevel(logging.INFO)
    try:
        settings = serve_settings(args)
        pipeline = build_pipeline(settings)
    except RemediationError as exc:
        sys.stderr.write(f"remediate: cannot serve: {exc}\n")
        return EXIT_INVALID
    app = create_app(settings, pipeline)
    stop = threading.Event()
    if args.sweep_every > 0:
        threading.Thread(target=sweep_forever, args=(pipeline, args.sweep_every, stop),
                         name="sweep", daemon=True).start()
    try:
        waitress.serve(app, host=args.host, port=args.port,
                       **waitress_options(settings.http))
    finally:
        stop.set()
    return EXIT_OK


def sweep_forever(pipeline: Any, every: float, stop: Any) -> None:
    """Sweep every ``every`` seconds until ``stop`` is set (a failing sweep is
    logged and tried again at the next tick)."""
    from .dispatch import log_outcome

    log = logging.getLogger("remediation.sweep")
    while not stop.wait(every):
        try:
            for o in pipeline.sweep():
                log_outcome(o, via="sweep")
        except Exception as exc:  # noqa: BLE001 - keep sweeping
            log.warning("sweep failed: %s: %s", type(exc).__name__, exc)


def gameday_plan_only(doc: Any, base_dir: Path) -> dict[str, Any]:
    """One scenario document on the snapshot stand (its own ledger, plan only):
    what the MCP door's run_gameday runs. ``InvalidInput`` for a bad scenario."""
    from .gameday import SnapshotStand, parse_scenario, run_scenario

    scenario = parse_scenario(doc, base_dir=base_dir, where="scenario")
    stand = SnapshotStand()
    try:
        return run_scenario(scenario, stand).as_dict()
    finally:
        stand.close()


def serve_mcp(settings: Settings, *, err: TextIO) -> int:
    """The MCP server over stdio (stdout carries the protocol: logs go to stderr)."""
    from .runtime import build_pipeline, close_pipeline

    _ledger_note(settings, err)
    try:
        pipeline = build_pipeline(settings)
    except RemediationError as exc:
        err.write(f"remediate: cannot start: {exc}\n")
        return EXIT_INVALID
    try:
        from .mcp_server import serve_stdio

        serve_stdio(pipeline, gameday=gameday_plan_only)
    finally:
        close_pipeline(pipeline)
    return EXIT_OK


def generate_files(root: Path, *, check: bool, out: TextIO) -> int:
    """``remediate generate``: the generated files under ``root`` brought up
    to date with the declarations (``--check``: only listed; exit 1 on drift)."""
    from .actions.catalogue import CATALOGUE
    from .generate import sync

    stale = sync(root, CATALOGUE, write=not check)
    for rel in stale:
        out.write(f"{'stale' if check else 'wrote'} {rel}\n")
    if not stale:
        out.write("generated files are up to date\n")
    return EXIT_RETRY if check and stale else EXIT_OK


def _exit_for(outcome: Outcome) -> int:
    if outcome.status is Status.REJECTED:
        return EXIT_INVALID
    if outcome.status is Status.RETRY:
        return EXIT_RETRY
    return EXIT_OK


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: control characters (C0 but newline and tab, DEL, C1) and the bidirectional
#: overrides that reorder what a terminal shows
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e"
                          "\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``)."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"),
                            text)


class PrintableText:
    """A text stream that writes :func:`printable` text to another."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(printable(text))

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def waitress_options(http: Any) -> dict[str, Any]:
    """waitress limits from Settings (issue 15, findings 5 and 9): it buffers a
    request body before the app sees it, so its own limit must be the app's
    (a larger body is refused with 413 from the headers, before it is read);
    idle or trickling connections are closed after ``channel_timeout``."""
    return {"max_request_body_size": http.max_body_bytes,
            "channel_timeout": http.channel_timeout,
            "cleanup_interval": max(1, min(30, int(http.channel_timeout // 2) or 1)),
            "connection_limit": http.connection_limit,
            "threads": http.threads}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="remediate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("replay", help="replay events (dry run unless --apply)")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="event files (or, with --from-dlq, dead-letter ids; none: all)")
    p.add_argument("--from-dlq", action="store_true", help="replay stored dead letters")
    p.add_argument("--store", default=os.environ.get("REMEDIATION_DEAD_LETTERS", ""),
                   help="dead-letter store (SQLite file)")
    p.add_argument("--sink", default="", help="with --from-dlq: re-send to this broker URL")
    p.add_argument("--cluster", metavar="SNAPSHOT", help="plan against a snapshot file")
    p.add_argument("--kubeconfig", metavar="FILE", help="plan (and apply) against a cluster")
    p.add_argument("--apply", action="store_true", help="apply the plans (default: dry run)")
    p.add_argument("--json", action="store_true", help="one JSON outcome per line")
    s = sub.add_parser("serve", help="serve the HTTP app locally (waitress)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--ledger", default="", metavar="FILE",
                   help="SQLite ledger file, or 'kubernetes' (default: REMEDIATION_LEDGER, else "
                        "~/.local/state/inference-remediation/ledger.sqlite); 'memory' only in "
                        "dry run")
    s.add_argument("--sweep-every", type=float, default=30.0, metavar="SECONDS",
                   help="run scheduled work (recovery after the healthy delay) this often; "
                        "0: never (a PingSource or `remediate sweep` does it)")
    sw = sub.add_parser("sweep", help="run scheduled work that is due (recovery after the "
                                      "healthy delay), once")
    sw.add_argument("--json", action="store_true")
    sub.add_parser("demo", help="replay the bundled alerts against the bundled fleet")
    dlq = sub.add_parser("dlq", help="dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dl = dlq_sub.add_parser("list", help="list stored dead letters")
    dl.add_argument("--store", default=os.environ.get("REMEDIATION_DEAD_LETTERS", ""))
    dl.add_argument("--json", action="store_true")
    pol = sub.add_parser("policy", help="policy tools")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True)
    pt = pol_sub.add_parser("test", help="run the Rego unit tests with the embedded engine")
    pt.add_argument("--policy-dir", default="")
    v = sub.add_parser("vault", help="Vault tools")
    v_sub = v.add_subparsers(dest="vault_command", required=True)
    vs = v_sub.add_parser("setup", help="idempotent Vault set-up from vault/ definitions")
    vs.add_argument("--definitions", default="vault")
    add_gameday_parser(sub)
    ge = sub.add_parser("generate", help="regenerate the manifests, Vault files, policy data "
                                         "and README table the remediations' declarations "
                                         "give (--check: only report drift)")
    ge.add_argument("--root", default=".", help="the repository (default: here)")
    ge.add_argument("--check", action="store_true", help="write nothing; exit 1 on drift")
    pe = sub.add_parser("pending", help="list remediations waiting for approval")
    pe.add_argument("--json", action="store_true")
    ap = sub.add_parser("approve", help="approve a pending remediation (runs it here, or "
                                        "--send a signed approval event)")
    ap.add_argument("id", help="the approval id (remediate pending)")
    ap.add_argument("--by", default=os.environ.get("REMEDIATION_APPROVER")
                    or os.environ.get("USER", ""), help="who approves (default: $USER)")
    ap.add_argument("--send", default="", metavar="URL",
                    help="send a signed approval CloudEvent to this Broker/function URL")
    ap.add_argument("--function", default="",
                    help="with --send: the function that parked it (routes the event)")
    ap.add_argument("--expires-at", default="", metavar="TIME",
                    help="with --send: the request's expires_at (remediate pending), which "
                         "the signature binds the approval to")
    ap.add_argument("--kubeconfig", metavar="FILE", help="act on this cluster")
    ap.add_argument("--json", action="store_true")
    mc = sub.add_parser("mcp", help="serve the MCP server for AI agents over stdio")
    mc.add_argument("--cluster", metavar="SNAPSHOT", help="plan against a snapshot file")
    mc.add_argument("--kubeconfig", metavar="FILE", help="plan (and apply) against a cluster")
    mc.add_argument("--apply", action="store_true", help="apply allowed plans (default: dry run)")
    args = parser.parse_args(argv)
    # Everything printed, logs included, shows control characters escaped:
    # stored events must not drive the operator's terminal (issue 15)
    # streams that show control characters as escapes (a TextIO to the commands)
    stdout = cast(TextIO, PrintableText(sys.stdout))
    stderr = cast(TextIO, PrintableText(sys.stderr))
    logging.basicConfig(level=os.environ.get("REMEDIATION_LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=stderr)

    try:
        if args.command == "replay" and args.from_dlq:
            return replay_dead_letters(args.paths, args.store, _settings_for_replay(args),
                                       sink=args.sink, as_json=args.json, out=stdout,
                                       err=stderr)
        if args.command == "dlq":
            return dlq_list(args.store, as_json=args.json, out=stdout)
    except InvalidInput as exc:
        stderr.write(f"remediate: {exc}\n")
        return EXIT_INVALID
    if args.command == "replay":
        if not args.paths:
            parser.error("replay needs at least one PATH (or --from-dlq)")
        return replay(args.paths, _settings_for_replay(args), as_json=args.json,
                      out=stdout, err=stderr)
    if args.command == "demo":
        return demo(stdout, stderr)
    if args.command == "mcp":
        return serve_mcp(_settings_for_replay(args), err=stderr)
    if args.command == "gameday":
        return run_gameday(args, stdout, stderr)
    if args.command == "generate":
        return generate_files(Path(args.root), check=args.check, out=stdout)
    if args.command == "pending":
        return pending(Settings.from_env(os.environ), as_json=args.json, out=stdout,
                       err=stderr)
    if args.command == "approve":
        settings = Settings.from_env(os.environ)
        if args.kubeconfig:
            settings = replace(settings, kube=replace(settings.kube, kubeconfig=args.kubeconfig,
                                                      snapshot=""))
        return approve(args.id, args.by, settings, send_to=args.send, function=args.function,
                       as_json=args.json, out=stdout, err=stderr, expires_at=args.expires_at)
    if args.command == "serve":
        return serve(args)
    if args.command == "sweep":
        return sweep(Settings.from_env(os.environ), as_json=args.json, out=sys.stdout,
                     err=sys.stderr)
    if args.command == "policy":
        from .clients.rego import run_rego_tests

        results = run_rego_tests(args.policy_dir or None)
        failed = [r for r in results if not r[1]]
        for name, ok, message in results:
            detail = f": {message}" if message else ""
            stdout.write(f"{'PASS' if ok else 'FAIL'} {name}{detail}\n")
        stdout.write(f"{len(results) - len(failed)} passed, {len(failed)} failed\n")
        return 1 if failed or not results else EXIT_OK
    if args.command == "vault":
        from .clients.vault import setup_vault
        from .settings import Secret

        settings = Settings.from_env(os.environ)
        token = os.environ.get("VAULT_TOKEN", "")  # else hvac's ~/.vault-token, like the vault CLI
        try:
            report = setup_vault(settings.vault, args.definitions,
                                 token=Secret(token) if token else None)
        except RemediationError as exc:
            stderr.write(f"remediate: vault setup failed: {exc}\n")
            return EXIT_RETRY
        stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        return EXIT_OK
    return EXIT_INVALID


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
