"""The app's answers to errors: 413, 422 without the input echoed, and 503, never a 500.

Registered on the FastAPI app by `install`, and called by the decision lane
(`serving.middleware.DecisionLane`), which answers its routes outside FastAPI, so that both
ways in give the same answers.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from serving.audit import AuditUnavailable

logger = logging.getLogger("serving")


async def too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """Answer 413: the body is larger than `limit` bytes."""
    response = JSONResponse(
        {"detail": f"request body is larger than {limit} bytes"}, status_code=413
    )
    await response(scope, receive, send)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each field, as FastAPI's would, but without the offending input."""
    # The default echoes the offending input back; a huge payload should not come back.
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def unreadable_body(request: Request, exc: Exception) -> Response:
    """A body FastAPI could not read (JSON that is not UTF-8) is a 422 naming the body.

    FastAPI answers 400 "There was an error parsing the body" when reading a body fails
    with anything but a JSON syntax error; this API raises no 400 of its own, so every 400
    is that one, answered as the other bad bodies are. Other HTTP errors pass unchanged.
    """
    if not isinstance(exc, HTTPException) or exc.status_code != 400:
        return await http_exception_handler(request, exc)  # type: ignore[arg-type]
    detail = [{"loc": ["body"], "msg": "the body is not JSON in UTF-8", "type": "json_invalid"}]
    return JSONResponse({"detail": detail}, status_code=422)


async def audit_down(request: Request, exc: Exception) -> JSONResponse:
    """503 when the audit log is down: nothing was recorded, so nothing is decided."""
    logger.error("audit log unavailable", extra={"fields": {"error": str(exc)}})
    request.app.state.service.metrics.unavailable.labels(component="audit").inc()
    return JSONResponse(
        {"detail": "audit log unavailable: no decision recorded; fall back to merchant review"},
        status_code=503,
    )


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    """503 for anything unexpected (logged with its traceback): fail closed, never a 500."""
    logger.exception("unexpected error", exc_info=exc)
    return JSONResponse(
        {"detail": "the service cannot decide right now; fall back to merchant review"},
        status_code=503,
    )


def install(app: FastAPI) -> None:
    """Register the handlers: 422 for a bad request or an unreadable body, 503 when the audit
    log is down or for anything unexpected."""
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, unreadable_body)
    app.add_exception_handler(AuditUnavailable, audit_down)
    app.add_exception_handler(Exception, unexpected)
