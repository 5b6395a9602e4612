"""The FastAPI application factory: `create_app(settings)`; the lifespan loads the model."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelcontract import redact_uri
from serving.audit import AuditUnavailable
from serving.coalesce import Coalescer
from serving.config import Settings
from serving.deps import token_table
from serving.metrics import Metrics
from serving.model import ModelUnavailable, champion_version
from serving.policy import load_policy
from serving.routes import admin, decisions, health
from serving.service import Clock, Service

logger = logging.getLogger("serving")


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
        await _too_large(scope, receive, send, self.limit)


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
            response = await _audit_down(Request(scope), exc)
        except Exception as exc:  # noqa: BLE001 - fail closed: 503, never a 500
            response = await _unexpected(Request(scope), exc)
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


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = JSONResponse(
        {"detail": f"request body is larger than {limit} bytes"}, status_code=413
    )
    await response(scope, receive, send)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    # The default echoes the offending input back; a huge payload should not come back.
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def _audit_down(request: Request, exc: Exception) -> JSONResponse:
    logger.error("audit log unavailable", extra={"fields": {"error": str(exc)}})
    request.app.state.service.metrics.unavailable.labels(component="audit").inc()
    return JSONResponse(
        {"detail": "audit log unavailable: no decision recorded; fall back to merchant review"},
        status_code=503,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error", exc_info=exc)
    return JSONResponse(
        {"detail": "the service cannot decide right now; fall back to merchant review"},
        status_code=503,
    )


async def _checkpoint_audit(service: Service, every_seconds: float = 0.25) -> None:
    """Fold the audit WAL into the database, so no request's commit pays for it.

    Two passes in a thread copy the bulk, then what was committed during the first (a few
    milliseconds' worth); then the frames committed during the second are copied on the loop,
    between requests, so that every frame is checkpointed and the next commit rewinds the WAL
    (see `AuditLog.finish_checkpoint`). The loop's part is short because the second pass is.
    """
    while True:
        await asyncio.sleep(every_seconds)
        try:
            audit = service.open_audit()  # also notices a log deleted or replaced while idle
        except AuditUnavailable:
            continue  # requests get the 503 and /readyz says why
        except Exception:  # noqa: BLE001 - a bug here must not end the checkpoints for good
            logger.exception("audit checkpoint: opening the log failed")
            continue
        try:
            await asyncio.to_thread(audit.checkpoint)
            await asyncio.to_thread(audit.checkpoint)
            audit.finish_checkpoint()
        except Exception as exc:  # noqa: BLE001 - the next request reports a real outage
            logger.warning("audit checkpoint failed", extra={"fields": {"error": str(exc)}})


async def _follow_champion(service: Service, every_seconds: float, retry_after: int = 10) -> None:
    """Load the champion the registry's alias points at when it moves (a promotion, a
    rollback) or when none is loaded yet (the API started before the first promotion).

    A version that fails to load is tried again only every `retry_after` checks (it may be
    broken, or the failure passing); the model being served keeps serving meanwhile. A
    registry that cannot be asked is logged once, when it stops answering.
    """
    settings = service.settings
    failed: str | None = None
    waits = 0
    registry_down = False
    while True:
        await asyncio.sleep(every_seconds)
        try:
            latest = await asyncio.to_thread(
                champion_version, settings.tracking_uri(), settings.model_name, settings.model_alias
            )
        except Exception as exc:  # noqa: BLE001 - keep serving what is loaded; say so once
            if not registry_down:
                logger.warning(
                    "model registry unreachable: the champion alias is not followed meanwhile",
                    extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}},
                )
            registry_down = True
            continue
        registry_down = False
        current = service.champion.version if service.champion is not None else None
        if latest is None or latest == current:
            continue
        if latest == failed and waits < retry_after:
            waits += 1
            continue
        try:
            champion = await service.load_model()
        except ModelUnavailable:
            failed, waits = latest, 0  # logged by load_model
            continue
        failed = None
        try:
            service.open_audit().record_admin_action(
                service.clock(),
                "registry",
                "reload_model",
                champion.name,
                f"@{settings.model_alias} moved",
                json.dumps({"previous": current, "version": champion.version}),
            )
        except AuditUnavailable as exc:
            logger.warning("model reload not recorded", extra={"fields": {"error": str(exc)}})


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    """Build the decision API.

    Nothing is loaded here: the lifespan reads the policy, opens the online store and the
    audit log, and loads the champion once. A missing model or store does not stop the
    service: it answers manual_review with SCORE_UNAVAILABLE and /readyz says why.

    Args:
        settings: Configuration; read from the environment when None.
        clock: Seconds since the epoch (tests move time for the velocity limits).

    Raises:
        ConfigError: The environment's settings or tokens are unusable.
    """
    settings = settings if settings is not None else Settings.load()
    settings.check_tokens()  # outside development: no default, missing or short tokens

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        policy = load_policy(settings.policy_path)
        service = Service(settings, policy, Metrics(), clock or time.time)
        app.state.service = service
        group_sizes = service.metrics.group_size.labels(route="single")
        app.state.coalescer = Coalescer(
            service.decide, max_batch=settings.coalesce_max, on_flush=group_sizes.observe
        )
        app.state.tokens = token_table(settings)
        service.open_store()
        try:
            service.open_audit()
        except AuditUnavailable as exc:
            logger.error("audit log unavailable", extra={"fields": {"error": str(exc)}})
        try:
            await service.load_model()
        except ModelUnavailable:
            pass  # logged; decisions fail closed until an admin reload succeeds
        logger.info(
            "serving",
            extra={
                "fields": {
                    "environment": settings.environment,
                    "policy_version": policy.version,
                    "model_version": service.champion.version if service.champion else None,
                    # Absolute: a relative default resolves against the working directory.
                    "store": str(settings.store_path.resolve()),
                    "audit": str(settings.audit_path.resolve()),
                    "tracking_uri": redact_uri(settings.tracking_uri()),
                }
            },
        )
        # Startup leaves ~450k long-lived objects (MLflow, pandas, the model); a full
        # collection walks them all (~0.3 s, stalling every request in flight). Frozen, they
        # are left out of collections; what requests allocate is still collected.
        gc.collect()
        gc.freeze()
        background = [asyncio.create_task(_checkpoint_audit(service))]
        if settings.model_check_seconds > 0:
            background.append(
                asyncio.create_task(_follow_champion(service, settings.model_check_seconds))
            )
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            service.close()
            gc.unfreeze()

    app = DecisionAPI(
        title="fastrefund decision API",
        summary="Unshipped fast refunds: hard rules, buyer premium score, audited decisions.",
        version="1",
        lifespan=lifespan,
    )
    app.include_router(decisions.raw_router)
    app.include_router(decisions.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(AuditUnavailable, _audit_down)
    app.add_exception_handler(Exception, _unexpected)
    app.max_body_bytes = settings.max_body_bytes  # enforced outermost, see DecisionAPI
    return app
