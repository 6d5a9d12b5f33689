"""The `sluice` client commands: apply specs, run workflows, watch instances, read logs, events.

Every command talks to the HTTP API at SLUICE_API_URL (default http://127.0.0.1:8080) with
SLUICE_TOKEN, in the workspace SLUICE_WORKSPACE or `--workspace` (default `default`). Output is a
table for people, or the API's JSON with `--json`. Exit codes: 0 success; 1 the API refused the
request (or a waited-for run did not succeed); 2 bad local input; 3 the API could not be reached.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from shared import spec_yaml
from shared.client.commands import (
    EXIT_FAILED,
    EXIT_OK,
    Handler,
    UsageError,
    cell,
    execute,
    positive_int,
    print_json,
    table,
)
from shared.client.http import Client, ClientError, Unreachable

# Kept equal to the trigger models' `type` values (tests/unit/test_cli_specs.py): the CLI does
# not import the models, which keeps its start-up fast.
TRIGGER_TYPES = ("kafka", "s3", "workflow")
FINAL_STATES = ("succeeded", "failed", "terminated", "cancelled")
FINAL_NODE_STATES = frozenset({"succeeded", "failed", "upstream_failed", "terminated", "skipped"})
WAIT_POLL_S = 1.0
# Executors carry out requests within about 2 s (NOTIFY, or their poll as the fallback).
REQUEST_POLL_S = 0.2
REQUEST_TIMEOUT_S = 30.0
_PAST = {"freeze": "frozen", "unfreeze": "unfrozen"}


# --------------------------------------------------------------------------------------------
# spec files


def _plain(value: Any) -> Any:
    """YAML turns unquoted timestamps into datetime objects; the API wants ISO strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def load_specs(text: str, origin: str) -> list[dict[str, Any]]:
    """Specs in a JSON or YAML text: one object, a list, or a YAML multi-document stream."""
    try:
        docs: list[Any] = [json.loads(text)]
    except json.JSONDecodeError:
        try:
            docs = list(spec_yaml.load_all(text))
        except spec_yaml.YAMLError as exc:
            raise UsageError(f"{origin}: neither JSON nor YAML: {exc}") from None
    specs: list[dict[str, Any]] = []
    for doc in docs:
        for item in doc if isinstance(doc, list) else [doc]:
            if item is None:
                continue
            if not isinstance(item, dict):
                raise UsageError(
                    f"{origin}: every spec must be an object, got {type(item).__name__}"
                )
            if not isinstance(item.get("name"), str):
                raise UsageError(f"{origin}: a spec has no 'name'")
            specs.append(_plain(item))
    if not specs:
        raise UsageError(f"{origin}: no specs found")
    return specs


def _read_source(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(encoding="utf-8"), path
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _seg(name: str) -> str:
    """A name as one URL path segment."""
    return quote(name, safe="")


def _is_trigger(spec: dict[str, Any]) -> bool:
    return spec.get("type") in TRIGGER_TYPES


# --------------------------------------------------------------------------------------------
# commands


def _apply(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    specs: list[dict[str, Any]] = []
    for path in args.file:
        text, origin = _read_source(path)
        specs.extend(load_specs(text, origin))
    # Triggers first: a workflow names its trigger, which must exist when the workflow is saved.
    ordered = [s for s in specs if _is_trigger(s)] + [s for s in specs if not _is_trigger(s)]
    results: list[dict[str, Any]] = []
    failed = 0
    known: set[str] | None = None
    for spec in ordered:
        kind = "trigger" if _is_trigger(spec) else "workflow"
        name = spec["name"]
        path = client.ws(f"/{kind}s/{_seg(name)}")
        try:
            if kind == "trigger":
                saved = client.put(path, spec)
                action = (
                    "created"
                    if saved["created"]
                    else "updated"
                    if saved["changed"]
                    else "unchanged"
                )
            else:
                saved = client.put(path, spec, publish=str(not args.no_publish).lower())
                action = _workflow_action(saved)
        except ClientError as exc:
            if isinstance(exc, Unreachable):
                raise
            failed += 1
            for problem in exc.errors:
                sys.stderr.write(f"error: {kind} {name!r}: {problem}\n")
            results.append(
                {
                    "kind": kind,
                    "name": name,
                    "action": "error",
                    "error": str(exc),
                    "errors": list(exc.errors),
                }
            )
            continue
        entry = {"kind": kind, "name": name, "action": action, "result": saved}
        named = named_connections(spec) if kind == "workflow" else []
        if named and known is None:
            known = {c["name"] for c in client.pages(client.ws("/connections"))}
        # Saved all the same: the connection may be created later, but a run would fail now.
        warnings = [
            f"{where}: connection {conn!r} does not exist yet "
            f"(`sluice connections create {conn} ...`)"
            for where, conn in named
            if known is not None and conn not in known
        ]
        if warnings:
            entry["warnings"] = warnings
        results.append(entry)
        if not args.json:
            out.write(f"{kind}/{name} {action}\n")
        for warning in warnings:
            sys.stderr.write(f"warning: {kind} {name!r}: {warning}\n")
    if args.json:
        print_json(results, out)
    return EXIT_FAILED if failed else EXIT_OK


def named_connections(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(field path, connection name) of every connection a workflow spec's nodes name."""
    found: list[tuple[str, str]] = []
    nodes = spec.get("nodes")
    for index, node in enumerate(nodes if isinstance(nodes, list) else []):
        if not isinstance(node, dict):
            continue
        places: list[tuple[str, Any]] = [(f"nodes.{index}", node)]
        for inner in ("check", "sync"):
            if isinstance(node.get(inner), dict):
                places.append((f"nodes.{index}.{inner}", node[inner]))
        for prefix, holder in places:
            for key in ("connection", "s3_connection"):
                value = holder.get(key)
                if isinstance(value, str) and value:
                    found.append((f"{prefix}.{key}", value))
    return found


def _workflow_action(saved: dict[str, Any]) -> str:
    version = saved["version"]
    if saved["created"]:
        action = f"created (v{version})"
    elif saved["new_version"]:
        action = f"updated (v{version})"
    elif saved["published"]:
        return f"published (v{version})"
    else:
        return "unchanged"
    return action + (", published" if saved["published"] else "")


def _message_arg(value: str | None) -> Any:
    if value is None:
        return None
    if value.startswith("@"):
        text, origin = _read_source(value[1:])
    else:
        text, origin = value, "--message"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{origin}: not valid JSON ({exc.msg}); quote strings as '\"text\"'"
        ) from None


def _params_arg(values: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {item!r}: expected NAME=VALUE")
        params[key] = value
    return params


def _run_workflow(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    body: dict[str, Any] = {
        "trigger_message": _message_arg(args.message),
        "parameters": _params_arg(args.param),
        "kind": "manual",
    }
    if args.priority is not None:
        body["priority"] = args.priority
    if args.bizdate is not None:
        body["bizdate"] = args.bizdate
    if args.version is not None:
        body["version"] = args.version
    if args.draft:
        body["draft"] = True
    accepted = client.post_once(client.ws(f"/workflows/{_seg(args.name)}/runs"), body)
    instance_id = accepted["instance_id"]
    if not args.wait:
        if args.json:
            print_json(accepted, out)
        else:
            out.write(f"instance {instance_id} {accepted['state']}\n")
        return EXIT_OK
    if not args.json:
        out.write(f"instance {instance_id} {accepted['state']}\n")
        out.flush()
    # With --json stdout carries only the final JSON; progress is for people.
    detail = _wait_final(client, instance_id, args.timeout, None if args.json else out)
    if args.json:
        print_json(detail, out)
        return EXIT_OK if detail["state"] == "succeeded" else EXIT_FAILED
    # The last line stays `instance ID STATE`: scripts read it.
    if detail["state"] != "succeeded":
        out.write(f"instance {instance_id}: {wait_progress(detail)}\n")
    for line in failure_lines(detail):
        out.write(line + "\n")
    out.write(f"instance {instance_id} {detail['state']}\n")
    return EXIT_OK if detail["state"] == "succeeded" else EXIT_FAILED


def wait_progress(detail: dict[str, Any]) -> str:
    """`2/3 nodes done, 1 running` for an instance's detail."""
    nodes = detail["nodes"]
    done = sum(1 for n in nodes if n["state"] in FINAL_NODE_STATES)
    running = sum(1 for n in nodes if n["state"] == "running")
    text = f"{done}/{len(nodes)} nodes done"
    return text + (f", {running} running" if running else "")


def failure_lines(detail: dict[str, Any]) -> list[str]:
    """For each node that failed: its reason, and the command that prints its log."""
    lines = []
    for node in detail["nodes"]:
        if node["state"] not in ("failed", "terminated") or not node["attempts"]:
            continue
        last = node["attempts"][-1]
        reason = last.get("reason") or node["state"]
        code = last.get("exit_code")
        if reason == "exit_code" and code is not None:
            reason = f"exited with code {code}"
        elif code is not None:
            reason += f", exit code {code}"
        lines.append(
            f"node {node['name']} {node['state']} ({reason}); its log: "
            f"sluice logs {detail['id']} {node['name']}"
        )
    return lines


def _wait_final(
    client: Client, instance_id: int, timeout: float | None, progress: TextIO | None
) -> dict[str, Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = ""
    while True:
        detail: dict[str, Any] = client.get(client.ws(f"/instances/{instance_id}"))
        if detail["state"] in FINAL_STATES:
            return detail
        line = f"instance {instance_id} {detail['state']}: {wait_progress(detail)}"
        if progress is not None and line != shown:
            # A line per change, not per poll: the output stays readable in a CI log.
            progress.write(line + "\n")
            progress.flush()
            shown = line
        if deadline is not None and time.monotonic() > deadline:
            raise ClientError(
                f"instance {instance_id} is still {detail['state']} after {timeout:g}s"
            )
        time.sleep(WAIT_POLL_S)


def _node_progress(states: dict[str, int]) -> str:
    total = sum(states.values())
    return f"{states.get('succeeded', 0) + states.get('skipped', 0)}/{total}"


def _instances(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    page = client.get(
        client.ws("/instances"),
        workflow=args.workflow,
        state=args.state or None,
        kind=args.kind or None,
        limit=args.limit,
    )
    items = page["items"]
    if args.json:
        print_json(items, out)
        return EXIT_OK
    table(
        (
            (
                i["id"],
                i["workflow"],
                f"v{i['version']}",
                i["kind"],
                i["state"],
                _node_progress(i["node_states"]),
                i["created_at"],
                i["finished_at"],
            )
            for i in items
        ),
        ("ID", "WORKFLOW", "VERSION", "KIND", "STATE", "NODES", "CREATED", "FINISHED"),
        out,
    )
    return EXIT_OK


def _instance(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    detail = client.get(client.ws(f"/instances/{args.id}"))
    if args.json:
        print_json(detail, out)
        return EXIT_OK
    for label, key in (
        ("instance", "id"),
        ("workflow", "workflow"),
        ("version", "version"),
        ("kind", "kind"),
        ("state", "state"),
        ("reason", "reason"),
        ("priority", "priority"),
        ("cyctime", "cyctime"),
        ("bizdate", "bizdate"),
        ("event", "event_id"),
        ("replay", "replay_id"),
        ("original", "replay_of"),
        ("created", "created_at"),
        ("started", "started_at"),
        ("finished", "finished_at"),
    ):
        if detail.get(key) is not None:
            out.write(f"{label + ':':<10} {cell(detail[key])}\n")
    if detail.get("coalesced_events"):
        ids = detail["coalesced_event_ids"]
        shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
        out.write(f"{'coalesced:':<10} {detail['coalesced_events']} events ({shown})\n")
    if detail.get("parameters"):
        out.write(f"{'params:':<10} {json.dumps(detail['parameters'], ensure_ascii=False)}\n")
    out.write("\n")
    rows = []
    for node in detail["nodes"]:
        last = node["attempts"][-1] if node["attempts"] else {}
        rows.append(
            (
                node["name"],
                node["type"],
                node["state"],
                len(node["attempts"]),
                last.get("exit_code"),
                last.get("reason"),
                last.get("started_at"),
                last.get("finished_at"),
            )
        )
    table(rows, ("NODE", "TYPE", "STATE", "ATTEMPTS", "EXIT", "REASON", "STARTED", "FINISHED"), out)
    return EXIT_OK


def _logs(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    if args.follow:
        wrote = False
        for text in client.follow_log(args.instance, args.node, args.attempt):
            out.write(text)
            out.flush()
            wrote = wrote or bool(text)
        if wrote:
            return EXIT_OK
        # The stream ended empty: the node may have ended without ever running.
    text, headers = client.log(args.instance, args.node, args.attempt)
    if "x-sluice-attempt" not in headers:
        # No attempt at all: an empty log would look like a node that ran and printed nothing.
        later = "and will not" if headers.get("x-sluice-finished") == "true" else "yet"
        sys.stderr.write(
            f"error: node {args.node!r} of instance {args.instance} has not run {later}; "
            f"see `sluice instance {args.instance}`\n"
        )
        return EXIT_FAILED
    out.write(text)
    return EXIT_OK


def _outputs(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    path = client.ws(f"/instances/{args.instance}/nodes/{quote(args.node, safe='')}/outputs")
    result = client.get(path)
    if args.attempt is not None:
        chosen = [a for a in result["attempts"] if a["attempt"] == args.attempt]
        if not chosen:
            raise ClientError(f"attempt {args.attempt} of node {args.node!r} not found")
        print_json(chosen[0]["outputs"] if not args.json else chosen[0], out)
        return EXIT_OK
    if args.json:
        print_json(result, out)
        return EXIT_OK
    if result["attempt"] is None:
        out.write(f"node {result['node']} ({result['state']}): no succeeded attempt yet\n")
    else:
        out.write(
            f"node {result['node']} ({result['state']}): descendants read attempt "
            f"{result['attempt']}\n"
        )
        print_json(result["outputs"], out)
    if result["attempts"]:
        out.write("\n")
        rows = []
        for a in result["attempts"]:
            shown = a["outputs"]
            text = "-" if shown is None else json.dumps(shown, ensure_ascii=False)
            rows.append((a["attempt"], a["state"], a["finished_at"], _clip(text, 60)))
        table(rows, ("ATTEMPT", "STATE", "FINISHED", "OUTPUTS"), out)
    return EXIT_OK


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _carried_out(
    client: Client, instance_id: int, asked: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Wait for an executor to carry out a terminate or rerun request; its final row."""
    deadline = time.monotonic() + timeout
    request = asked
    path = client.ws(f"/instances/{instance_id}/requests/{asked['id']}")
    while request["state"] == "pending":
        if time.monotonic() >= deadline:
            raise ClientError(
                f"the {request['action']} of instance {instance_id} (request {request['id']}) is "
                f"still pending after {timeout:g}s: no executor has taken it; is one running? "
                "It is carried out when one starts."
            )
        time.sleep(REQUEST_POLL_S)
        request = client.get(path)
    if request["state"] == "failed":
        raise ClientError(str(request["reason"] or f"the {request['action']} failed"))
    return request


def _terminate(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    asked = client.post(client.ws(f"/instances/{args.id}/terminate"))
    result = _carried_out(client, args.id, asked, args.timeout)
    if args.json:
        print_json(result, out)
    else:
        out.write(f"instance {result['instance_id']} {result['instance_state']}\n")
    return EXIT_OK


def _rerun(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    mode = "failed" if args.failed else "all"
    asked = client.post(client.ws(f"/instances/{args.id}/rerun"), {"mode": mode})
    result = _carried_out(client, args.id, asked, args.timeout)
    if args.json:
        print_json(result, out)
    else:
        out.write(f"instance {result['instance_id']} {result['instance_state']} (rerun {mode})\n")
    return EXIT_OK


def _outcomes_cell(outcomes: list[dict[str, Any]]) -> str:
    parts = []
    for o in outcomes:
        who = o.get("trigger") or "-"
        if o.get("workflow"):
            who += f"/{o['workflow']}"
        ids = ",".join(str(i) for i in o.get("instance_ids") or [])
        parts.append(f"{who}:{o['outcome']}" + (f"[{ids}]" if ids else ""))
    return " ".join(parts) or "-"


def _events(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    page = client.get(
        client.ws("/events"), trigger=args.trigger, outcome=args.outcome, limit=args.limit
    )
    items = page["items"]
    if args.json:
        print_json(items, out)
        return EXIT_OK
    table(
        (
            (
                e["id"],
                e["source"],
                e["subject"],
                e["ref"],
                e["received_at"],
                _outcomes_cell(e["outcomes"]),
            )
            for e in items
        ),
        ("ID", "SOURCE", "SUBJECT", "REF", "RECEIVED", "OUTCOMES"),
        out,
    )
    return EXIT_OK


def _event(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    event = client.get(client.ws(f"/events/{args.id}"))
    if args.json:
        print_json(event, out)
        return EXIT_OK
    for label, key in (
        ("event", "id"),
        ("source", "source"),
        ("subject", "subject"),
        ("ref", "ref"),
        ("received", "received_at"),
        ("error", "error"),
        ("replay", "replay_id"),
        ("original", "replay_of"),
    ):
        if event.get(key) is not None:
            out.write(f"{label + ':':<10} {cell(event[key])}\n")
    if event.get("payload_truncated"):
        out.write(f"{'payload:':<10} truncated (over 1 MiB)\n")
    out.write("\n")
    table(
        (
            (
                o.get("trigger"),
                o.get("workflow"),
                o["outcome"],
                ",".join(str(i) for i in o["instance_ids"]) or None,
                o.get("detail"),
            )
            for o in event["outcomes"]
        ),
        ("TRIGGER", "WORKFLOW", "OUTCOME", "INSTANCES", "DETAIL"),
        out,
    )
    return EXIT_OK


def _workflows(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    items = list(client.pages(client.ws("/workflows"), type=args.type))
    if args.json:
        print_json(items, out)
        return EXIT_OK
    table(
        (
            (
                w["name"],
                w["type"],
                w["trigger"],
                f"v{w['current_version']}",
                f"v{w['published_version']}" if w["published_version"] else None,
                w["frozen"],
            )
            for w in items
        ),
        ("NAME", "TYPE", "TRIGGER", "LATEST", "PUBLISHED", "FROZEN"),
        out,
    )
    return EXIT_OK


def _workflow(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    detail = client.get(client.ws(f"/workflows/{_seg(args.name)}"))
    status = client.get(client.ws(f"/workflows/{_seg(args.name)}/status"))
    if args.json:
        print_json({"workflow": detail, "status": status}, out)
        return EXIT_OK
    published = detail["published_version"]
    out.write(f"{'workflow:':<11} {detail['name']} ({detail['type']})\n")
    if detail.get("trigger"):
        out.write(f"{'trigger:':<11} {detail['trigger']}\n")
    out.write(f"{'versions:':<11} latest v{detail['current_version']}, ")
    out.write(f"published {'v' + str(published) if published else '-'}\n")
    out.write(f"{'frozen:':<11} {cell(detail['frozen'])}\n")
    counts = ", ".join(f"{k} {v}" for k, v in status["instances"].items())
    out.write(f"{'instances:':<11} {counts}\n")
    nodes = status["nodes"]
    out.write(f"{'nodes:':<11} ready {nodes.get('ready', 0)}, running {nodes.get('running', 0)}\n")
    queue = status.get("backpressure")
    if queue:
        out.write(
            f"{'queue:':<11} {queue['waiting']} of max_waiting {queue['max_waiting']} waiting "
            f"({queue['state']})\n"
        )
    last = status.get("last_instance")
    if last:
        out.write(f"{'last run:':<11} {last['id']} {last['state']} ({cell(last['created_at'])})\n")
    return EXIT_OK


def _triggers(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    items = list(client.pages(client.ws("/triggers")))
    if args.json:
        print_json(items, out)
        return EXIT_OK
    table(
        (
            (
                t["name"],
                t["type"],
                t["spec"].get("topic") or t["spec"].get("bucket"),
                t["spec"].get("key_pattern") or t["spec"].get("key"),
                t["enabled"],
                t["updated_at"],
                # Last: a filter holds spaces, and the columns before it stay easy to split.
                t["spec"].get("filter"),
            )
            for t in items
        ),
        ("NAME", "TYPE", "SOURCE", "MATCH", "ENABLED", "UPDATED", "FILTER"),
        out,
    )
    return EXIT_OK


def _workflow_state_change(action: str) -> Handler:
    def handler(args: argparse.Namespace, client: Client, out: TextIO) -> int:
        body = {"version": args.version} if getattr(args, "version", None) else None
        result = client.post(client.ws(f"/workflows/{_seg(args.name)}/{action}"), body)
        if args.json:
            print_json(result, out)
        elif action == "publish":
            out.write(f"workflow/{result['name']} published (v{result['published_version']})\n")
        else:
            out.write(f"workflow/{result['name']} {_PAST[action]}\n")
        return EXIT_OK

    return handler


def _diff(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    result = client.get(client.ws(f"/workflows/{_seg(args.name)}/versions/{args.a}/diff/{args.b}"))
    if args.json:
        print_json(result, out)
    else:
        out.write(result["unified"] or f"v{args.a} and v{args.b} are identical\n")
    return EXIT_OK


def _delete(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    client.delete(client.ws(f"/{args.kind}s/{_seg(args.name)}"))
    if args.json:
        print_json({"kind": args.kind, "name": args.name, "deleted": True}, out)
    else:
        out.write(f"{args.kind}/{args.name} deleted\n")
    return EXIT_OK


def _secrets_arg(args: argparse.Namespace) -> dict[str, str] | None:
    """Secrets from `--secrets-file` and `--secret KEY` prompts; never from the command line,
    where they would land in shell history and the process list."""
    secrets: dict[str, str] = {}
    if args.secrets_file:
        text, origin = _read_source(args.secrets_file)
        try:
            loaded = spec_yaml.load(text)
        except spec_yaml.YAMLError as exc:
            raise UsageError(f"{origin}: neither JSON nor YAML: {exc}") from None
        if not isinstance(loaded, dict) or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in loaded.values()
        ):
            raise UsageError(f"{origin}: secrets must be an object of NAME: text")
        secrets.update({str(k): str(v) for k, v in loaded.items()})
    for key in args.secret:
        if "=" in key:
            raise UsageError(
                f"--secret {key.partition('=')[0]}: give only the name; the value is read from "
                "a prompt or stdin, never from the command line"
            )
        if sys.stdin.isatty():
            value = getpass.getpass(f"{key}: ")
        else:
            # Piped: one line per --secret, in order (`printf 'pw\n' | sluice connections ...`).
            value = sys.stdin.readline().rstrip("\n")
        if not value:
            raise UsageError(f"--secret {key}: no value given")
        secrets[key] = value
    return secrets or None


def _config_arg(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if args.config_file:
        text, origin = _read_source(args.config_file)
        try:
            loaded = spec_yaml.load(text)
        except spec_yaml.YAMLError as exc:
            raise UsageError(f"{origin}: neither JSON nor YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"{origin}: config must be an object")
        config.update(_plain(loaded))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        config[key] = value
    return config


def _connection_create(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    if args.secrets_file == "-" and args.secret:
        raise UsageError("--secrets-file - and --secret both read stdin; use one")
    body: dict[str, Any] = {"name": args.name, "kind": args.kind, "config": _config_arg(args)}
    secrets = _secrets_arg(args)
    if secrets is not None:
        body["secrets"] = secrets
    saved = client.put(client.ws(f"/connections/{_seg(args.name)}"), body)
    if args.json:
        print_json(saved, out)
        return EXIT_OK
    keys = ", ".join(saved["connection"]["secret_keys"]) or "none"
    action = "created" if saved["created"] else "updated"
    out.write(f"connection/{args.name} {action} (secrets: {keys})\n")
    return EXIT_OK


def _connection_list(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    items = list(client.pages(client.ws("/connections")))
    if args.json:
        print_json(items, out)
        return EXIT_OK
    table(
        (
            (
                c["name"],
                c["kind"],
                ",".join(c["secret_keys"]) or None,
                c["updated_at"],
                json.dumps(c["config"], ensure_ascii=False, sort_keys=True),
            )
            for c in items
        ),
        ("NAME", "KIND", "SECRETS", "UPDATED", "CONFIG"),
        out,
    )
    return EXIT_OK


def _connection_delete(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    client.delete(client.ws(f"/connections/{_seg(args.name)}"))
    if args.json:
        print_json({"kind": "connection", "name": args.name, "deleted": True}, out)
    else:
        out.write(f"connection/{args.name} deleted\n")
    return EXIT_OK


def _register_connections(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    summary = "create, list and delete the workspace's connections (databases, S3, Kafka, SMTP)"
    group = subparsers.add_parser("connections", help=summary, description=summary)
    actions = group.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="list, create or delete"
    )

    def add(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, parents=[common], help=help_, description=help_)
        parser.set_defaults(func=lambda args: execute(handler, args))
        return parser

    p = add("list", _connection_list, "list connections (secret values are never shown)")
    p = add(
        "create",
        _connection_create,
        "create a connection, or replace one (without secrets given, the stored ones stay)",
    )
    p.add_argument("name", help="connection name, as nodes and triggers name it")
    p.add_argument(
        "--kind",
        required=True,
        choices=("postgres", "s3", "kafka", "smtp", "secret"),
        help="what it connects to",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config value, as text (repeatable), e.g. dsn=postgresql://host/db",
    )
    p.add_argument(
        "--config-file",
        metavar="FILE",
        help="config as a JSON/YAML object (for values that are not text); - is stdin",
    )
    p.add_argument(
        "--secrets-file",
        metavar="FILE",
        help="secrets as a JSON/YAML object of NAME: value; - is stdin",
    )
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME",
        help="prompt for this secret (repeatable; piped stdin gives one line each)",
    )
    p = add("delete", _connection_delete, "delete a connection")
    p.add_argument("name", help="connection name")


# --------------------------------------------------------------------------------------------
# wiring


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client commands to the `sluice` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    common.add_argument(
        "-w", "--workspace", help="workspace (default: $SLUICE_WORKSPACE, else 'default')"
    )

    def add(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, parents=[common], help=help_, description=help_)
        parser.set_defaults(func=lambda args: execute(handler, args))
        return parser

    p = add("apply", _apply, "create or update triggers and workflows from JSON/YAML files")
    p.add_argument(
        "-f",
        "--file",
        action="append",
        required=True,
        metavar="FILE",
        help="spec file (JSON or YAML; one spec, a list, or a YAML stream); - is stdin",
    )
    p.add_argument("--no-publish", action="store_true", help="save workflows without publishing")

    p = add("run-workflow", _run_workflow, "run a workflow now, optionally with a trigger message")
    p.add_argument("name", help="workflow name")
    p.add_argument("--message", metavar="JSON|@FILE", help="trigger message (JSON, or @file)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="runtime parameter (repeatable); overrides every other source",
    )
    p.add_argument("--priority", type=int, choices=(1, 3, 5, 7, 8), help="priority override")
    p.add_argument(
        "--bizdate", metavar="YYYYMMDD", help="business date override (20260309 or 2026-03-09)"
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", type=positive_int, help="run this version")
    which.add_argument("--draft", action="store_true", help="run the latest, unpublished version")
    p.add_argument(
        "--wait", action="store_true", help="wait for the run to finish; exit 1 unless it succeeded"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="with --wait: give up after S seconds",
    )

    p = add("instances", _instances, "list instances, newest first")
    p.add_argument("--workflow", help="only this workflow's instances")
    p.add_argument(
        "--state",
        action="append",
        default=[],
        choices=("waiting", "running", "succeeded", "failed", "terminated", "cancelled"),
        help="only instances in this state (repeatable)",
    )
    p.add_argument(
        "--kind",
        action="append",
        default=[],
        choices=("scheduled", "triggered", "manual", "api", "backfill", "rerun", "replay"),
        help="only instances started this way (repeatable)",
    )
    p.add_argument("--limit", type=positive_int, default=50, help="at most N (default 50)")

    p = add("instance", _instance, "show an instance with its nodes and attempts")
    p.add_argument("id", type=positive_int, help="instance id")

    p = add("logs", _logs, "print a node attempt's log")
    p.add_argument("instance", type=positive_int, help="instance id")
    p.add_argument("node", help="node name")
    p.add_argument("--attempt", type=positive_int, help="default: the latest attempt")
    p.add_argument("-f", "--follow", action="store_true", help="stream until the attempt ends")

    p = add("outputs", _outputs, "show a node's outputs and those of each of its attempts")
    p.add_argument("instance", type=positive_int, help="instance id")
    p.add_argument("node", help="node name")
    p.add_argument("--attempt", type=positive_int, help="print only this attempt's outputs")

    p = add("terminate", _terminate, "kill a running instance (waits for an executor to do it)")
    p.add_argument("id", type=positive_int, help="instance id")
    p.add_argument(
        "--timeout",
        type=float,
        default=REQUEST_TIMEOUT_S,
        help=f"give up waiting for an executor after SECONDS (default {REQUEST_TIMEOUT_S:g})",
        metavar="SECONDS",
    )

    p = add("rerun", _rerun, "run an instance again (all nodes, or only failed ones)")
    p.add_argument("id", type=positive_int, help="instance id")
    p.add_argument(
        "--failed",
        action="store_true",
        help="rerun only failed, upstream_failed and terminated nodes",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=REQUEST_TIMEOUT_S,
        help=f"give up waiting for an executor after SECONDS (default {REQUEST_TIMEOUT_S:g})",
        metavar="SECONDS",
    )

    p = add("events", _events, "list received events with their per-trigger outcomes")
    p.add_argument("--trigger", help="only events this trigger saw")
    p.add_argument(
        "--outcome",
        help="only events with this outcome for some trigger",
        choices=(
            "admitted",
            "duplicate",
            "filtered",
            "frozen",
            "unpublished",
            "overflow",
            "invalid",
            "no_trigger",
            "no_workflow",
            "disabled",
            "coalesced",
        ),
    )
    p.add_argument("--limit", type=positive_int, default=50, help="at most N (default 50)")

    p = add("event", _event, "show why an event did or did not start runs")
    p.add_argument("id", type=positive_int, help="event id")

    p = add("workflows", _workflows, "list workflows")
    p.add_argument(
        "--type", choices=("scheduled", "triggered", "manual"), help="only workflows of this type"
    )

    p = add("workflow", _workflow, "show a workflow with its aggregated status")
    p.add_argument("name", help="workflow name")

    add("triggers", _triggers, "list triggers")

    p = add("publish", _workflow_state_change("publish"), "publish a workflow version")
    p.add_argument("name", help="workflow name")
    p.add_argument("--version", type=positive_int, help="default: the latest version")

    p = add(
        "freeze", _workflow_state_change("freeze"), "stop schedules and triggers from running it"
    )
    p.add_argument("name", help="workflow name")
    p = add(
        "unfreeze", _workflow_state_change("unfreeze"), "let schedules and triggers run it again"
    )
    p.add_argument("name", help="workflow name")

    p = add("diff", _diff, "show what changed between two versions of a workflow")
    p.add_argument("name", help="workflow name")
    p.add_argument("a", type=positive_int, help="the older version number")
    p.add_argument("b", type=positive_int, help="the newer version number")

    _register_connections(subparsers, common)

    p = add("delete", _delete, "delete a trigger, workflow or connection")
    p.add_argument("kind", choices=("trigger", "workflow", "connection"), help="what to delete")
    p.add_argument("name", help="its name")
