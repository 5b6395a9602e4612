"""The two ASGI middlewares around the app: the request-size limit and the decision lane.

`DecisionAPI` is FastAPI with both in place: `BodySizeLimit` outermost, then `DecisionLane`,
then FastAPI's own stack. docs/decision-routes.md says why the decision routes take a lane of
their own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import error_handlers
from serving.audit import AuditUnavailable
from serving.routes import decisions


class _BodyTooLarge(HTTPException):
    """A chunked body passed the limit while it was read.

    An HTTPException, because FastAPI turns any other exception raised while it reads a body
    into a 400; this one it lets through to the app's handler, which answers 413. Raised
    outside FastAPI (the decision lane), `BodySizeLimit` answers it.
    """

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than {limit} bytes")


class BodySizeLimit:
    """Refuse request bodies above `limit` bytes with a 413, before any parsing; each refusal
    is reported to `on_refused` (the decision routes count theirs)."""

    def __init__(self, app: ASGIApp, limit: int, on_refused: Callable[[Scope], None] | None = None):
        self.app = app
        self.limit = limit
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await self._refuse(scope, receive, send)
                    return
                # The server reads exactly Content-Length bytes of body: nothing to count.
                await self.app(scope, receive, send)
                return
        # No Content-Length (chunked): count the body as it arrives.
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.on_refused is not None:
            self.on_refused(scope)
        await error_handlers.too_large(scope, receive, send, self.limit)


class DecisionLane:
    """Serve the two decision routes straight from ASGI, ahead of FastAPI's middleware stack.

    They are the hot path: under load, FastAPI's stack (error, telemetry and exception
    middlewares, the exit-stack middleware, route matching, the request/response wrapper)
    cost about 30% of the worker's CPU, more than the decision itself. Here a POST to either
    path reads its Authorization header and body from ASGI, goes to the same functions the
    documented routes call (`decisions.decide_raw`, `decisions.decide_batch_raw`), and is
    answered with two ASGI messages. Their exceptions get the app's answers: 401/403 as
    raised, 503 when the audit log is down, 503 for anything unexpected (never a 500).
    Everything else goes through FastAPI unchanged.
    """

    def __init__(self, app: ASGIApp, api: FastAPI):
        self.app = app
        self.api = api
        self.endpoints = {
            "/v1/refund-decisions": (decisions.decide_raw, "single"),
            "/v1/refund-decisions/batch": (decisions.decide_batch_raw, "batch"),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (
            self.endpoints.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if route is None:
            await self.app(scope, receive, send)
            return
        endpoint, name = route
        scope["app"] = self.api  # as Starlette sets it
        try:
            authorization = _header(scope, b"authorization")
            status, content = await endpoint(
                self.api.state, authorization, functools.partial(_body, receive)
            )
        except ClientDisconnect:
            return  # nobody to answer; anything decided is in the audit log
        except _BodyTooLarge:
            raise  # BodySizeLimit, outside this lane, answers 413 (and counts it)
        except HTTPException as exc:
            response = JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        except AuditUnavailable as exc:
            response = await error_handlers.audit_down(Request(scope), exc)
        except Exception as exc:  # noqa: BLE001 - fail closed: 503, never a 500
            response = await error_handlers.unexpected(Request(scope), exc)
        else:
            if status != 200:
                self._refused(name, status)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(content)),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})
            return
        self._refused(name, response.status_code)
        await response(scope, receive, send)

    def _refused(self, route: str, status: int) -> None:
        service = getattr(self.api.state, "service", None)
        if service is not None:
            service.metrics.refused.labels(route=route, status=str(status)).inc()

    def too_large(self, scope: Scope) -> None:
        """Count a 413 that `BodySizeLimit` answered, if it was for a decision route."""
        route = self.endpoints.get(scope["path"]) if scope["method"] == "POST" else None
        if route is not None:
            self._refused(route[1], 413)


def _header(scope: Scope, name: bytes) -> str:
    """A request header's value ("" when absent); ASGI servers give names in lower case."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


async def _body(receive: Receive) -> bytes:
    """The whole request body, as Starlette's `Request.body()` reads it.

    Raises:
        ClientDisconnect: The client went away first.
    """
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class DecisionAPI(FastAPI):
    """FastAPI with the request-size limit outermost and the decision lane inside it."""

    max_body_bytes: int = 2_000_000

    def build_middleware_stack(self) -> ASGIApp:
        lane = DecisionLane(super().build_middleware_stack(), self)
        return BodySizeLimit(lane, self.max_body_bytes, lane.too_large)
