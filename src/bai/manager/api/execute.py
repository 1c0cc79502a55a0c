"""Execution: ``POST /session/{id}`` (query / continue / input / complete),
interrupt and complete (API.md section 6)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bai.common.agent_rpc import BatchSteps, CompleteRequest, ExecRequest
from bai.common.errors import InvalidRequest
from bai.common.wire import BatchOptions, CompleteOptions, ExecuteRequest, QueryOptions
from bai.manager.api.deps import body_as, live_session, manager_of, validate
from bai.manager.sessions import LiveSession


def exec_request(session: LiveSession, req: ExecuteRequest, flush_timeout_s: float) -> ExecRequest:
    """Check a run request's fields against its mode."""
    if req.mode in ("continue", "input") and not req.run_id:
        raise InvalidRequest(f"runId: mode {req.mode!r} needs the runId of the run in progress", field="runId")
    assert req.mode in ("query", "batch", "continue", "input")
    return ExecRequest(
        session_id=session.id,
        mode=req.mode,
        run_id=req.run_id,
        code=req.code,
        flush_timeout_s=flush_timeout_s,
        batch=batch_steps(req.options) if req.mode == "batch" else None,
        script=query_options(req.options).script if req.mode == "query" else False,
    )


def query_options(raw_options: Any) -> QueryOptions:
    """A query's ``options`` (wire.QueryOptions: ``script``). Backend.AI reads none in
    query mode, so what is not an object is ignored, as there; a bad ``script`` is not."""
    if not isinstance(raw_options, dict):
        return QueryOptions()
    try:
        return validate(QueryOptions, raw_options)
    except InvalidRequest as exc:
        raise InvalidRequest(f"options.{exc.message}", field=f"options.{exc.field}") from None


def batch_steps(raw_options: Any) -> BatchSteps:
    """A batch run's ``options`` (API.md section 6): ``clean``, ``build``, ``exec`` (a
    command, ``"*"`` or null) and ``buildLog``."""
    if raw_options is not None and not isinstance(raw_options, dict):
        raise InvalidRequest("options: must be a JSON object", field="options")
    try:
        options = validate(BatchOptions, raw_options or {})
    except InvalidRequest as exc:
        raise InvalidRequest(f"options.{exc.message}", field=f"options.{exc.field}") from None
    return BatchSteps(clean=options.clean, build=options.build, build_log=options.build_log, exec=options.exec)


async def _complete(request: Request, session: LiveSession, code: str, raw_options: Any) -> Response:
    manager = manager_of(request)
    options = validate(CompleteOptions, raw_options or {})
    completions = await manager.sessions.complete(
        session,
        CompleteRequest(session_id=session.id, code=code, line=options.line, row=options.row, col=options.col),
    )
    return JSONResponse({"result": {"status": "finished", "completions": completions}})


async def execute(request: Request) -> Response:
    manager = manager_of(request)
    session = await live_session(request)
    req = await body_as(request, ExecuteRequest)
    if req.mode == "complete":
        return await _complete(request, session, req.code, req.options)
    result = await manager.sessions.execute(
        session, exec_request(session, req, manager.config.flush_timeout_s)
    )
    return JSONResponse({"result": result.model_dump(mode="json")})


async def interrupt(request: Request) -> Response:
    manager = manager_of(request)
    session = await live_session(request)
    await manager.sessions.interrupt(session)
    return Response(status_code=204)


async def complete(request: Request) -> Response:
    session = await live_session(request)
    body = await body_as(request, ExecuteRequest, required=False)
    return await _complete(request, session, body.code, body.options)
