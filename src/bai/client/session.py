"""The async SDK's entry point: ``AsyncSession`` holds the HTTP client and the keys.

    async with AsyncSession() as api:                  # config from BACKEND_* variables
        sess = await api.ComputeSession.get_or_create("python", name="demo")
        result = await sess.execute(None, "print(6 * 7)")
        stats = await sess.destroy()

Every request goes through ``request`` (HTTP, signed by RequestSigner, one
keep-alive connection pool) or ``open_websocket`` (signed like a GET with no
content type); both turn httpx/websockets failures and problem+json answers
into the errors of bai.client.errors, so nothing below them leaks.
"""

from __future__ import annotations

import errno
import functools
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from bai.client.admin import AdminAPI
from bai.client.auth import Clock, RequestSigner, utc_now
from bai.client.base import AsyncAPI
from bai.client.compute import ComputeSessionFactory
from bai.client.config import APIConfig
from bai.client.errors import ConnectionFailed, ProtocolError, error_from_problem
from bai.client.models import AuthTestResult, ServerVersion, SessionEvent, SessionList
from bai.common.wire import EnvironmentList, EnvironmentOffer, SessionEventData, SessionInfo

Answer = TypeVar("Answer", bound=BaseModel)

#: Streamed output is capped at 512 KiB a stream per frame; leave room for JSON escaping.
WEBSOCKET_MAX_FRAME = 16 * 1024 * 1024


@functools.cache
def client_version() -> str:
    try:
        return version("bai")
    except PackageNotFoundError:
        return "0+unknown"


class AsyncSession(AsyncAPI):
    """A connection to one manager with one keypair.

    Attributes ``ComputeSession`` (create or address compute sessions) and
    ``Admin`` (keypair administration) are bound to this session. Close it,
    or use it as an async context manager, to release the connections.
    """

    def __init__(
        self,
        config: APIConfig | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = utc_now,
    ) -> None:
        """``transport`` replaces the network (httpx's MockTransport in tests); ``clock`` dates signatures."""
        self.config = config if config is not None else APIConfig.from_env()
        self.signer = RequestSigner(self.config.access_key, self.config.secret_key, self.config.api_version, clock)
        self._http = httpx.AsyncClient(
            base_url=self.config.endpoint,
            timeout=httpx.Timeout(None, connect=self.config.connection_timeout, read=self.config.read_timeout),
            verify=not self.config.skip_sslcert_validation,
            headers={"User-Agent": f"bai-client/{client_version()}"},
            transport=transport,
        )
        self.ComputeSession = ComputeSessionFactory(self)
        self.Admin = AdminAPI(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # -- the calls that belong to no compute session ------------------------------------

    async def server_version(self) -> ServerVersion:
        """``GET /``: the API version and the manager's version."""
        return await self.request_model(ServerVersion, "GET", "/")

    async def auth_test(self, echo: str) -> AuthTestResult:
        """``POST /auth/test``: checks the keypair; the server echoes ``echo`` back."""
        return await self.request_model(AuthTestResult, "POST", "/auth/test", json={"echo": echo})

    async def list_environments(self) -> list[EnvironmentOffer]:
        """``GET /environments``: the environments the server's live agents offer, each with
        the agents that can start it and, on the others that know it, why not."""
        answer = await self.request_model(EnvironmentList, "GET", "/environments")
        return answer.items

    async def list_sessions(self, *, all_: bool = False) -> list[SessionInfo]:
        """``GET /session``: this keypair's sessions (every keypair's with ``all_``, admins only)."""
        params = {"all": "true"} if all_ else None
        answer = await self.request_model(SessionList, "GET", "/session", params=params)
        return answer.items

    async def session_events(
        self, *, name: str | None = None, session_id: str | None = None, scope: str = "session",
        on_connected: Callable[[], None] | None = None,
    ) -> AsyncIterator[SessionEvent]:
        """``GET /events/session``: this keypair's lifecycle events as they happen, until the
        caller stops iterating or the server ends the stream (it stops). ``name`` /
        ``session_id`` narrow it to one session. ``on_connected`` is called once the server
        has accepted the stream: every event from then on reaches the caller."""
        params = {"scope": scope}
        if name:
            params["sessionName"] = name
        if session_id:
            params["sessionId"] = session_id
        request = self.build_request("GET", "/events/session", params=params)
        # the stream idles between events (the server sends a comment every 15 s): no read timeout
        request.extensions["timeout"] = httpx.Timeout(self.config.connection_timeout, read=None).as_dict()
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise ConnectionFailed(describe_network_error(self.config.endpoint, exc)) from exc
        try:
            if response.is_error:
                await response.aread()
                raise error_from_problem(response.status_code, response.content, reason=response.reason_phrase)
            if on_connected is not None:
                on_connected()
            async for event in parse_sse(response.aiter_lines()):
                yield event
        except httpx.HTTPError as exc:
            raise ConnectionFailed(f"lost the event stream from {self.config.endpoint}: {exc}") from exc
        finally:
            await response.aclose()

    # -- transport, for the API objects bound to this session ----------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one signed request; raise the mapped error for a non-2xx answer."""
        return await self.send(self.build_request(method, path, json=json, params=params))

    async def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Send a built, signed request; raise the mapped error for a non-2xx answer.
        With ``stream`` the caller reads the body and closes the answer."""
        try:
            response = await self._http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise ConnectionFailed(self._timeout_message(exc)) from exc
        except httpx.ConnectError as exc:
            raise ConnectionFailed(describe_network_error(self.config.endpoint, exc)) from exc
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise ConnectionFailed(f"lost the connection to {self.config.endpoint}: {reason}") from exc
        if response.is_error:
            if stream:
                await response.aread()
                await response.aclose()
            raise error_from_problem(response.status_code, response.content, reason=response.reason_phrase)
        return response

    def build_request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        """The signed request exactly as ``request`` sends it (``content``: a streamed
        multipart body, with its Content-Type in ``headers``)."""
        request = self._http.build_request(method, path, json=json, params=params, content=content, headers=headers)
        self.signer.sign_request(request)
        return request

    async def request_model(
        self,
        model: type[Answer],
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Answer:
        """``request``, then parse the answer's JSON body as ``model``."""
        response = await self.request(method, path, json=json, params=params)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise ProtocolError(f"unexpected answer to {method} {path} from {self.config.endpoint}: {exc}") from exc

    def websocket_url(self, path: str) -> str:
        return "ws" + self.config.endpoint.removeprefix("http") + path

    async def open_websocket(self, path: str) -> ClientConnection:
        """Open a signed WebSocket to ``path``; the caller closes it."""
        url = self.websocket_url(path)
        options: dict[str, Any] = {}
        if url.startswith("wss:") and self.config.skip_sslcert_validation:
            options["ssl"] = _unverified_tls()
        try:
            return await connect(
                url,
                additional_headers=self.signer.websocket_headers(url),
                user_agent_header=f"bai-client/{client_version()}",
                open_timeout=self.config.connection_timeout,
                max_size=WEBSOCKET_MAX_FRAME,
                **options,
            )
        except InvalidStatus as exc:
            answer = exc.response
            body = bytes(answer.body or b"")
            raise error_from_problem(answer.status_code, body, reason=answer.reason_phrase) from exc
        except (OSError, TimeoutError) as exc:
            raise ConnectionFailed(describe_network_error(self.config.endpoint, exc)) from exc
        except WebSocketException as exc:
            raise ProtocolError(f"WebSocket handshake with {url} failed: {exc}") from exc

    def _timeout_message(self, exc: httpx.TimeoutException) -> str:
        if isinstance(exc, httpx.ConnectTimeout):
            return f"timed out connecting to {self.config.endpoint}"
        limit = self.config.read_timeout
        return f"{self.config.endpoint} did not answer within {limit} s (BACKEND_READ_TIMEOUT)"


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[SessionEvent]:
    """Server-sent event records (``event:`` then ``data:`` lines, a blank line ends one);
    comments and unknown fields are skipped."""
    name = ""
    async for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:") and name:
            try:
                data = SessionEventData.model_validate_json(line[5:].strip())
            except ValidationError as exc:
                raise ProtocolError(f"a malformed {name} event: {exc}") from exc
            yield SessionEvent(name=name, data=data)
            name = ""


def describe_network_error(endpoint: str, exc: BaseException) -> str:
    """One line for a failed connection: the OS's reason where there is one."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return f"cannot connect to {endpoint}: connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return f"cannot connect to {endpoint}: {cause.strerror.lower()}"
        cause = cause.__cause__ or cause.__context__
    reason = str(exc) or type(exc).__name__
    return f"cannot connect to {endpoint}: {reason[:1].lower()}{reason[1:]}"


def _unverified_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
