"""The outermost ASGI layer: strips a ``/vN`` path prefix (remembering the raw
path for signature checks), and stamps ``Server`` and the rate-limit headers on
every response. Pure ASGI, so it adds no per-request task or body copy."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bai.common.versions import PATH_PREFIX_RE

SERVER_HEADER = b"BackendAI bai"


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, window_s: int) -> None:
        self.app = app
        self.window = str(window_s).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        state = scope.setdefault("state", {})
        state["raw_path"] = raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        match = PATH_PREFIX_RE.match(scope["path"])
        if match is not None:
            scope = dict(scope)
            scope["path"] = scope["path"][match.end():] or "/"
            scope["raw_path"] = raw[match.end():] or b"/"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"server", SERVER_HEADER))
                rate = state.get("rate")
                if rate is not None:
                    headers += [
                        (b"x-ratelimit-limit", str(rate.limit).encode()),
                        (b"x-ratelimit-remaining", str(rate.remaining).encode()),
                        (b"x-ratelimit-window", self.window),
                    ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
