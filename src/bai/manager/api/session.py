"""Session resources: create, list, info, destroy, restart, match (API.md section 5)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bai.common.errors import InvalidRequest, NotImplementedFeature, SessionCreationFailed
from bai.common.limits import SessionLimits
from bai.common.resources import Slots, parse_amount, parse_size, parse_slots
from bai.common.status import SessionStatus
from bai.common.wire import CreateSessionRequest, CreateSessionResponse, SessionConfig, SessionInfo
from bai.manager import lifecycle as st
from bai.manager.api.deps import api_version, body_as, caller, json_body, live_session, manager_of, owner_key
from bai.manager.sessions import CreateParams, LiveSession, SessionRegistry

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _requested_slots(config: SessionConfig | None) -> Slots:
    """The slots the request names; the session registry fills in the rest."""
    slots: Slots = {}
    if config is None:
        return slots
    try:
        if config.instance_cores is not None:
            slots["cpu"] = parse_amount(config.instance_cores)
        if config.instance_memory is not None:
            slots["mem"] = parse_amount(parse_size(config.instance_memory))
        slots.update(parse_slots(config.resources or {}))
    except ValueError as exc:
        raise InvalidRequest(f"config.{exc}", field="config.resources") from None
    if "cpu" in slots and slots["cpu"] <= 0:
        raise InvalidRequest("config.resources.cpu: must be more than 0", field="config.resources.cpu")
    if "mem" in slots and slots["mem"] < 16 * 2**20:
        raise InvalidRequest("config.resources.mem: must be at least 16m", field="config.resources.mem")
    return slots


def _environ(config: SessionConfig | None) -> dict[str, str]:
    environ = dict((config.environ if config else None) or {})
    for name in environ:
        if not _ENV_NAME.match(name):
            raise InvalidRequest(f"config.environ: {name!r} is not a valid variable name",
                                 field="config.environ")
    return environ


def _create_params(req: CreateSessionRequest) -> CreateParams:
    if not req.image:
        raise InvalidRequest("image: the environment to run is required (e.g. \"python\")", field="image")
    if req.type == "batch":
        raise NotImplementedFeature("type: batch sessions are not supported yet; use interactive")
    if (req.cluster_size or 1) > 1:
        raise NotImplementedFeature("clusterSize: multi-container sessions are not supported yet")
    if req.config is not None and req.config.mounts:
        raise NotImplementedFeature("config.mounts: virtual folders are not supported yet")
    return CreateParams(
        name=req.name,
        image=req.image,
        type=req.type or "interactive",
        tag=req.tag,
        resources=_requested_slots(req.config),
        environ=_environ(req.config),
        reuse=True if req.reuse_if_exists is None else req.reuse_if_exists,
        limits=(req.config.limits if req.config else None) or SessionLimits(),
    )


async def create(request: Request) -> Response:
    manager = manager_of(request)
    keypair = await caller(request)
    req = await body_as(request, CreateSessionRequest)
    if req.owner_access_key and req.owner_access_key != keypair.access_key:
        raise NotImplementedFeature("owner_access_key: creating sessions for another keypair is not supported")
    params = _create_params(req)
    policy = manager.policies.named_by(keypair.resource_policy, "resourcePolicy")
    session, created = await manager.sessions.create(keypair, params, policy)
    status: str = session.status
    if not req.enqueue_only:
        timeout = float(req.max_wait_seconds) if req.max_wait_seconds else None
        settled = await _wait_settled(request, manager.sessions, session, timeout)
        if settled is None:  # the client went away: nobody reads what follows
            if created:
                await manager.sessions.abandon(session)
            settled = True
        status = session.status if settled else "TIMEOUT"
        if session.status == SessionStatus.ERROR:
            raise SessionCreationFailed(f"session {session.name} could not start: {session.status_info}")
    legacy = api_version(request).uses_kernel_paths
    body = CreateSessionResponse(
        sessionId=session.id,
        sessionName=session.name,
        kernelId=session.name if legacy else session.id,
        status=status,
        servicePorts=[],
        created=created,
    )
    return JSONResponse(body.model_dump(), status_code=201 if created else 200)


async def _wait_settled(request: Request, sessions: SessionRegistry, session: LiveSession,
                        timeout_s: float | None) -> bool | None:
    """``SessionRegistry.wait_settled``, or None when the client disconnects first: a
    request whose client is gone does not wait on (nor keep) the session it asked for."""
    waiting = asyncio.ensure_future(sessions.wait_settled(session, timeout_s))
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        gone.cancel()
    if waiting.done() and not waiting.cancelled():
        return waiting.result()
    return None


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects. The body has been read, so the next ASGI
    message is the disconnect (uvicorn sends it when the connection is lost)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def session_info(session: LiveSession, last_stat: dict[str, Any] | None, now: datetime) -> SessionInfo:
    """``now`` (the manager's clock) ends a live session's age."""
    end = session.terminated_at or now
    occupied = {} if session.status in st.TERMINAL or session.agent_id is None else session.requested
    return SessionInfo(
        sessionId=session.id,
        sessionName=session.name,
        image=session.image,
        lang=session.image,
        type=session.type,
        tag=session.tag,
        status=session.status,
        statusInfo=session.status_info,
        age=int((end - session.created_at).total_seconds() * 1000),
        creationTime=session.created_at.isoformat(),
        terminationTime=_iso(session.terminated_at),
        agent=session.agent_id,
        occupiedSlots={k: format(v.normalize(), "f") for k, v in occupied.items()},
        requestedSlots={k: format(v.normalize(), "f") for k, v in session.requested.items()},
        environ=session.environ,
        numQueriesExecuted=session.num_queries,
        lastStat=last_stat,
        limits=session.limits,
    )


async def info(request: Request) -> Response:
    manager = manager_of(request)
    keypair = await caller(request)
    session = await manager.sessions.find(owner_key(request, keypair), request.path_params["id"])
    stat = await manager.sessions.live_stats(session)
    return JSONResponse(session_info(session, stat, manager.clock.utc()).model_dump())


async def list_sessions(request: Request) -> Response:
    manager = manager_of(request)
    keypair = await caller(request)
    everyone = request.query_params.get("all", "").lower() in ("1", "true", "yes")
    if everyone and keypair.is_admin:
        sessions = manager.sessions.live_sessions()
    else:
        sessions = manager.sessions.live_sessions(owner_key(request, keypair))
    now = manager.clock.utc()
    items = [session_info(s, s.last_stat, now).model_dump() for s in sessions]
    return JSONResponse({"items": items})


async def destroy(request: Request) -> Response:
    manager = manager_of(request)
    session = await live_session(request)
    await manager.sessions.destroy(session)
    return JSONResponse({"stats": session.last_stat or {"version": 2, "status": "terminated"}})


async def restart(request: Request) -> Response:
    manager = manager_of(request)
    session = await live_session(request)
    await manager.sessions.restart(session)
    return Response(status_code=204)


async def match(request: Request) -> Response:
    manager = manager_of(request)
    keypair = await caller(request)
    prefix = request.query_params.get("id", "")
    if not prefix:
        raise InvalidRequest("id: a session id or name prefix is required", field="id")
    found = await manager.sessions.match(owner_key(request, keypair), prefix)
    return JSONResponse(
        {"matches": [{"id": s.id, "name": s.name, "status": s.status} for s in found]}
    )


async def rename(request: Request) -> Response:
    """``POST /session/{id}/rename``: the new name in the body's ``name`` or the query (the
    official client sends it as a query parameter)."""
    manager = manager_of(request)
    session = await live_session(request)
    body = await json_body(request, required=False)
    new_name = body.get("name") or request.query_params.get("name")
    if not isinstance(new_name, str) or not new_name:
        raise InvalidRequest("name: the new session name is required", field="name")
    await manager.sessions.rename(session, new_name)
    return Response(status_code=204)
