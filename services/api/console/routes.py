"""The console's pages, its sign-in, and the one door its actions go through.

Pages read with the same repositories and queries as the API, always scoped to the signed-in
token's workspace (any valid token may read its own workspace, as `viewer` may in the API).
Every action (run, publish, rerun, ...) is sent to `/console/api/<API path>`, which checks the
CSRF token and forwards the request to the API itself with the session's token: the API's own
authorization decides, and its answer (403 included) is returned unchanged. The role only
decides which buttons a page shows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import parse_qs, quote, urlencode

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from services.api import diff
from services.api.console import dag_svg, instance_html, layout, session
from services.api.console.running_status import LABELS, running_status
from services.api.deps import allows, get_pool
from services.api.pagination import decode_id, page_by_id
from services.api.routes.instances import Q as INSTANCE_Q
from shared import backpressure
from shared.db import events as event_repo
from shared.db import instances as instance_repo
from shared.db import notifications as notification_repo
from shared.db import tokens as token_repo
from shared.db import triggers as trigger_repo
from shared.db import workflows as workflow_repo
from shared.db.errors import NotFound
from shared.db.queries import load
from shared.db.tokens import Principal
from shared.models.instances import InstanceOut
from shared.models.notifications import NotificationOut, NotificationState

Q = load(__file__, "pages")
HERE = Path(__file__).parent
STATIC_DIR: Final = HERE / "static"
PAGE_SIZE: Final = 50
FORM_MAX_BYTES: Final = 4096
INSTANCE_STATES: Final = ("waiting", "running", "succeeded", "failed", "terminated", "cancelled")
NOTIFICATION_STATES: Final[dict[str, NotificationState]] = {
    "pending": "pending",
    "sent": "sent",
    "dead": "dead",
}
INSTANCE_KINDS: Final = ("scheduled", "triggered", "manual", "api", "backfill", "rerun", "replay")
OUTCOMES: Final = (
    "admitted",
    "duplicate",
    "filtered",
    "frozen",
    "overflow",
    "coalesced",
    "no_trigger",
    "invalid",
)
# Headers of the API's answer worth passing to the page (log paging).
_FORWARDED: Final = ("content-type", "x-sluice-attempt", "x-sluice-last-seq", "x-sluice-finished")
# Pages load only this origin's files, run no inline script and cannot be framed; they hold a
# CSRF token and workspace data, so no cache keeps them and no other site learns their URLs.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'; object-src 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
# A followed log streams until its attempt ends; the console polls instead, so the door it goes
# through never holds a request open for the length of a run.
_NOT_FORWARDED_PARAMS: Final = frozenset({"follow"})

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["json"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
templates.env.filters["ts"] = lambda v: v.strftime("%Y-%m-%d %H:%M:%S") if v else ""
router = APIRouter(include_in_schema=False)


def _error(status: int, message: str) -> JSONResponse:
    code = {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status, "bad_request")
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _principal(request: Request) -> Principal | None:
    token = request.cookies.get(session.COOKIE)
    if not token:
        return None
    return await token_repo.authenticate(get_pool(request), token)


def _to_signin(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/signin?" + urlencode({"next": target}), status_code=303)


def _page(
    request: Request, principal: Principal, name: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    token = request.cookies.get(session.COOKIE, "")
    base = {
        "me": principal,
        "csrf": session.csrf_token(token),
        "can_operate": allows(principal.role, "operator"),
        "can_develop": allows(principal.role, "developer"),
        "ws": principal.workspace,
        "ws_path": _ws_path(principal),
    }
    response = templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status_code
    )
    response.headers.update(PAGE_HEADERS)
    return response


def _not_found(request: Request, principal: Principal, what: str) -> HTMLResponse:
    return _page(request, principal, "missing.html", status_code=404, what=what)


# --------------------------------------------------------------------------------- sign-in
async def _form(request: Request) -> dict[str, str]:
    """The fields of a small url-encoded form (the console's only two: sign-in, sign-out)."""
    body = (await request.body())[:FORM_MAX_BYTES].decode("utf-8", "replace")
    try:
        return {k: v[0] for k, v in parse_qs(body, max_num_fields=8).items()}
    except ValueError:  # more fields than any console form has
        return {}


@router.get("/signin", response_class=HTMLResponse)
async def signin_form(request: Request, next: str = "/") -> HTMLResponse:
    return templates.TemplateResponse(request, "signin.html", {"next": _safe_next(next)})


def _safe_next(target: str) -> str:
    """Only a path on this site: never `//host` or a scheme, which would redirect away."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.post("/signin", response_class=HTMLResponse)
async def signin(request: Request) -> Response:
    form = await _form(request)
    token, next = form.get("token", ""), form.get("next", "/")
    if not session.same_origin(request.headers):
        return _error(403, "sign-in must come from this site's own page")
    token = token.strip()
    principal = await token_repo.authenticate(get_pool(request), token) if token else None
    if principal is None:
        return templates.TemplateResponse(
            request,
            "signin.html",
            {"next": _safe_next(next), "error": "token: unknown or revoked"},
            status_code=401,
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        session.COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    csrf = (await _form(request)).get(session.CSRF_FIELD, "")
    token = request.cookies.get(session.COOKIE)
    if token and not (session.csrf_ok(token, csrf) and session.same_origin(request.headers)):
        return _error(403, "csrf: missing or wrong CSRF token")
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(session.COOKIE, path="/", httponly=True, samesite="strict")
    return response


# --------------------------------------------------------------------- actions via the API
@router.api_route("/console/api/{path:path}", methods=["GET", "POST"])
async def through_api(request: Request, path: str) -> Response:
    """Forward to `/api/v1/<path>` with the session's token; POST needs the CSRF token."""
    from services.api.app import API_PREFIX  # the app module imports this one

    token = request.cookies.get(session.COOKIE)
    if not token:
        return _error(401, "not signed in")
    if request.method == "POST" and not (
        session.csrf_ok(token, request.headers.get(session.CSRF_HEADER))
        and session.same_origin(request.headers)
    ):
        return _error(403, "csrf: missing or wrong CSRF token")
    if ".." in path.split("/"):
        return _error(404, "no such API path")
    headers = {"authorization": f"Bearer {token}"}
    if "content-type" in request.headers:
        headers["content-type"] = request.headers["content-type"]
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        answer = await client.request(
            request.method,
            f"{API_PREFIX}/{path}",
            params=[
                (k, v)
                for k, v in request.query_params.multi_items()
                if k not in _NOT_FORWARDED_PARAMS
            ],
            content=await request.body(),
            headers=headers,
        )
    kept = {k: v for k, v in answer.headers.items() if k.lower() in _FORWARDED}
    return Response(answer.content, status_code=answer.status_code, headers=kept)


# ------------------------------------------------------------------------------ workflows
@router.get("/", response_class=HTMLResponse)
async def workflows_page(request: Request) -> Response:
    principal = await _principal(request)
    if principal is None:
        return _to_signin(request)
    pool = get_pool(request)
    async with pool.acquire() as conn:
        items = await workflow_repo.list_for(conn, principal.workspace_id, None)
        activity = {
            r["id"]: r for r in await conn.fetch(Q["workflow_activity"], principal.workspace_id)
        }
    rows = []
    for wf in sorted(items, key=lambda w: w.name):
        act = activity.get(wf.id)
        counts = {"waiting": act["waiting"], "running": act["running"]} if act else {}
        status = running_status(counts, act["last_finished"] if act else None)
        rows.append({"wf": wf, "status": status, "label": LABELS[status], "counts": counts})
    return _page(request, principal, "workflows.html", rows=rows)


@router.get("/workflows/{name}", response_class=HTMLResponse)
async def workflow_page(
    request: Request,
    name: str,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    diff_from: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    diff_to: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    principal = await _principal(request)
    if principal is None:
        return _to_signin(request)
    ws_id = principal.workspace_id
    async with get_pool(request).acquire() as conn:
        try:
            wf = await workflow_repo.get(conn, ws_id, name)
            shown = version or wf.current_version
            spec_version = await workflow_repo.get_version(conn, ws_id, name, shown)
            versions = await workflow_repo.versions(conn, ws_id, name)
            changes = unified = None
            if diff_from is not None and diff_to is not None:
                old = await workflow_repo.get_version(conn, ws_id, name, diff_from)
                new = await workflow_repo.get_version(conn, ws_id, name, diff_to)
                changes = diff.spec_changes(old.spec, new.spec)
                unified = diff.unified(
                    old.spec, new.spec, f"{name}@v{diff_from}", f"{name}@v{diff_to}"
                )
        except NotFound:
            return _not_found(request, principal, f"workflow {name!r}")
        plan = await conn.fetchval(Q["version_plan"], ws_id, name, shown)
        queue = await backpressure.of_workflow(conn, wf.id)
    nodes = spec_version.spec.get("nodes", [])
    by_plan = {p["name"]: p for p in (plan or [])}
    graph = layout.layout({n["name"]: n.get("upstream", []) for n in nodes})
    info: dict[str, dict[str, object]] = {
        n["name"]: {
            "type": n.get("type", ""),
            "priority": by_plan.get(n["name"], {}).get("priority", ""),
            "weight": by_plan.get(n["name"], {}).get("weight", ""),
        }
        for n in nodes
    }
    return _page(
        request,
        principal,
        "workflow.html",
        wf=wf,
        shown=shown,
        spec=spec_version.spec,
        versions=versions,
        graph=graph,
        dag_svg=dag_svg.render(graph, info),
        changes=changes,
        unified=unified,
        diff_from=diff_from,
        diff_to=diff_to,
        backpressure=queue,
    )


# ------------------------------------------------------------------------------ instances
@router.get("/instances", response_class=HTMLResponse)
async def instances_page(
    request: Request,
    workflow: Annotated[str | None, Query(max_length=256)] = None,
    state: Annotated[str | None, Query(max_length=32)] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[datetime | None, Query()] = None,
    backfill: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    principal = await _principal(request)
    if principal is None:
        return _to_signin(request)
    states = [state] if state in INSTANCE_STATES else None
    kinds = [kind] if kind in INSTANCE_KINDS else None
    async with get_pool(request).acquire() as conn:
        rows = await conn.fetch(
            INSTANCE_Q["list_instances"],
            principal.workspace_id,
            decode_id(cursor),
            workflow or None,
            states,
            kinds,
            since,
            backfill,
            PAGE_SIZE + 1,
        )
    page, nxt = page_by_id(rows, lambda r: int(r["id"]), PAGE_SIZE)
    filters = {"workflow": workflow or "", "state": state or "", "kind": kind or ""}
    if since is not None:
        filters["since"] = since.isoformat()
    if backfill is not None:
        filters["backfill"] = str(backfill)
    next_url = "/instances?" + urlencode({**filters, "cursor": nxt}) if nxt else None
    return _page(
        request,
        principal,
        "instances.html",
        rows=page,
        filters=filters,
        next_url=next_url,
        states=INSTANCE_STATES,
        kinds=INSTANCE_KINDS,
    )


def _instance_view(
    inst: InstanceOut, outputs: dict[int, str], ws_path: str, now: datetime, pending: bool
) -> dict[str, Any]:
    spans = [
        layout.Span(n.name, a.attempt, a.state, a.started_at, a.finished_at)
        for n in inst.nodes
        for a in n.attempts
        if a.started_at is not None
    ]
    bars, total = layout.gantt(spans, now)
    url_of = f"/console/api{ws_path}/instances/{inst.id}/nodes/{{node}}/outputs"
    return {
        "inst": inst,
        "bars": bars,
        "total_s": total,
        "gantt_svg": instance_html.gantt_svg(bars),
        "attempt_rows": instance_html.attempt_rows(inst.nodes, outputs, url_of),
        "current_outputs": instance_html.current_outputs(inst.nodes, outputs, url_of),
        "node_states": {n.name: n.state for n in inst.nodes},
        "request_pending": pending,
    }


async def _instance(
    request: Request, principal: Principal, instance_id: int
) -> tuple[InstanceOut, dict[int, str], bool]:
    """The instance, per attempt id its outputs' JSON text (only attempts that made some), and
    whether a terminate or rerun of it is still pending."""
    async with get_pool(request).acquire() as conn:
        inst = await instance_repo.get(conn, principal.workspace_id, instance_id)
        rows = await conn.fetch(
            Q["instance_outputs"],
            instance_id,
            principal.workspace_id,
            instance_html.OUTPUTS_SHOWN + 1,
        )
        pending = bool(
            await conn.fetchval(Q["instance_request_pending"], instance_id, principal.workspace_id)
        )
    return inst, {int(r["id"]): str(r["text"]) for r in rows}, pending


def _ws_path(principal: Principal) -> str:
    return "/workspaces/" + quote(principal.workspace, safe="")


@router.get("/instances/{instance_id}", response_class=HTMLResponse)
async def instance_page(request: Request, instance_id: int) -> Response:
    principal = await _principal(request)
    if principal is None:
        return _to_signin(request)
    try:
        inst, outputs, pending = await _instance(request, principal, instance_id)
    except NotFound:
        return _not_found(request, principal, f"instance {instance_id}")
    notes = await _instance_notifications(request, principal, instance_id)
    graph = layout.layout({n.name: n.upstream for n in inst.nodes})
    info: dict[str, dict[str, object]] = {
        n.name: {"type": n.type, "priority": n.priority, "weight": n.weight} for n in inst.nodes
    }
    view = _instance_view(inst, outputs, _ws_path(principal), datetime.now(UTC), pending)
    svg = dag_svg.render(graph, info, view["node_states"])
    return _page(
        request,
        principal,
        "instance.html",
        graph=graph,
        dag_svg=svg,
        notifications=notes,
        more_notifications=len(notes) == PAGE_SIZE,
        **view,
    )


async def _instance_notifications(
    request: Request, principal: Principal, instance_id: int
) -> list[NotificationOut]:
    async with get_pool(request).acquire() as conn:
        return await notification_repo.list_for(
            conn, principal.workspace_id, instance_id=instance_id, limit=PAGE_SIZE
        )


@router.get("/instances/{instance_id}/notifications", response_class=HTMLResponse)
async def instance_notifications(request: Request, instance_id: int) -> Response:
    """The notifications table of an instance page, polled by it: alerts go out after the
    instance ends, when the page has stopped re-reading its live parts."""
    principal = await _principal(request)
    if principal is None:
        return _error(401, "not signed in")
    notes = await _instance_notifications(request, principal, instance_id)
    return _page(
        request,
        principal,
        "_notifications.html",
        rows=notes,
        compact=True,
        refresh=True,
        refresh_from=f"/instances/{instance_id}/notifications",
    )


@router.get("/instances/{instance_id}/live", response_class=HTMLResponse)
async def instance_live(request: Request, instance_id: int) -> Response:
    """The changing parts of an instance page (states, timeline, attempts), polled by it."""
    principal = await _principal(request)
    if principal is None:
        return _error(401, "not signed in")
    try:
        inst, outputs, pending = await _instance(request, principal, instance_id)
    except NotFound:
        return _error(404, f"instance {instance_id} not found")
    view = _instance_view(inst, outputs, _ws_path(principal), datetime.now(UTC), pending)
    return _page(request, principal, "instance_live.html", **view)


# --------------------------------------------------------------------------------- events
@router.get("/events", response_class=HTMLResponse)
async def events_page(
    request: Request,
    trigger: Annotated[str | None, Query(max_length=256)] = None,
    outcome: Annotated[str | None, Query(max_length=32)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    principal = await _principal(request)
    if principal is None:
        return _to_signin(request)
    async with get_pool(request).acquire() as conn:
        rows = await event_repo.list_for(
            conn,
            principal.workspace_id,
            trigger=trigger or None,
            outcome=outcome if outcome in OUTCOMES else None,
            since=None,
            before_id=decode_id(cursor),
            limit=PAGE_SIZE + 1,
        )
    page, nxt = page_by_id(rows, lambda e: e.id, PAGE_SIZE)
    filters = {"trigger": trigger or "", "outcome": outcome or ""}
    next_url = "/events?" + urlencode({**filters, "cursor": nxt}) if nxt else None
    return _page(
        request,
        principal,
        "events.html",
        events=page,
        filters=filters,
        next_url=next_url,
        outcomes=OUTCOMES,
    )


@router.get("/events/{event_id}", response_class=HTMLResponse)
async def event_page(request: Request, event_id: int) -> Response:
    principal = await _principal(request)
    if principal is None:
        return _to_signin(request)
    try:
        async with get_pool(request).acquire() as conn:
            event = await event_repo.get(conn, principal.workspace_id, event_id)
    except NotFound:
        return _not_found(request, principal, f"event {event_id}")
    return _page(request, principal, "event.html", event=event)


# ------------------------------------------------------------------ triggers and groups
@router.get("/triggers", response_class=HTMLResponse)
async def triggers_page(request: Request) -> Response:
    principal = await _principal(request)
    if principal is None:
        return _to_signin(request)
    async with get_pool(request).acquire() as conn:
        items = await trigger_repo.list_for(conn, principal.workspace_id)
        counts: dict[int, dict[str, int]] = {}
        for r in await conn.fetch(Q["trigger_outcomes"], [t.id for t in items]):
            counts.setdefault(r["trigger_id"], {})[r["outcome"]] = r["n"]
        bound: dict[int, list[Any]] = {}
        for r in await conn.fetch(Q["trigger_workflows"], principal.workspace_id):
            bound.setdefault(r["trigger_id"], []).append(r)
    rows = [
        {"t": t, "counts": counts.get(t.id, {}), "workflows": bound.get(t.id, [])}
        for t in sorted(items, key=lambda t: t.name)
    ]
    return _page(request, principal, "triggers.html", rows=rows, outcomes=OUTCOMES)


@router.get("/resource-groups", response_class=HTMLResponse)
async def resource_groups_page(request: Request) -> Response:
    principal = await _principal(request)
    if principal is None:
        return _to_signin(request)
    async with get_pool(request).acquire() as conn:
        groups = await conn.fetch(Q["resource_groups"])
        holders: dict[str, list[Any]] = {}
        for r in await conn.fetch(Q["group_holders"], principal.workspace_id):
            holders.setdefault(r["resource_group"], []).append(r)
    return _page(request, principal, "resource_groups.html", groups=groups, holders=holders)


# -------------------------------------------------------------------------- notifications
@router.get("/notifications", response_class=HTMLResponse)
async def notifications_page(
    request: Request,
    state: Annotated[str | None, Query(max_length=32)] = None,
    instance: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """The outbox newest first: what was sent, what still retries and what was given up."""
    principal = await _principal(request)
    if principal is None:
        return _to_signin(request)
    chosen = NOTIFICATION_STATES.get(state or "")
    async with get_pool(request).acquire() as conn:
        rows: list[NotificationOut] = await notification_repo.list_for(
            conn,
            principal.workspace_id,
            state=chosen,
            instance_id=instance,
            before_id=decode_id(cursor),
            limit=PAGE_SIZE + 1,
        )
    page, nxt = page_by_id(rows, lambda n: n.id, PAGE_SIZE)
    filters: dict[str, str] = {"state": chosen or ""}
    if instance is not None:
        filters["instance"] = str(instance)
    next_url = "/notifications?" + urlencode({**filters, "cursor": nxt}) if nxt else None
    return _page(
        request,
        principal,
        "notifications.html",
        notifications=page,
        filters=filters,
        next_url=next_url,
        states=tuple(NOTIFICATION_STATES),
    )
