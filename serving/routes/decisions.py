"""`/v1/refund-decisions`: decide one request, a batch, or read a stored decision."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.datastructures import State

from serving import openapi
from serving.bodies import MAX_ERRORS, field_errors, may_repeat_keys, shape_problem
from serving.coalesce import Coalescer
from serving.deps import DeciderDep, ServiceDep, caller_for
from serving.schemas import (
    BatchRequest,
    BatchResponse,
    DecisionRequest,
    DecisionResponse,
    ValidBatch,
)
from serving.service import Service


class RawRoute(APIRoute):
    """A route whose endpoint takes the `Request` and returns a `Response` by itself.

    FastAPI still documents it (OpenAPI from the decorator's arguments) and routes to it,
    but skips its per-request handler (dependency resolution, body reading, response model
    validation): the endpoint authenticates, parses and answers on its own. Exceptions still
    reach the app's handlers (401/403, 503 on audit failure).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


# Reads the request body; called only once the caller is authenticated.
ReadBody = Callable[[], Awaitable[bytes]]

router = APIRouter(prefix="/v1/refund-decisions", tags=["decisions"])
# The two decision routes, documented like the others but served by RawRoute.
raw_router = APIRouter(prefix="/v1/refund-decisions", tags=["decisions"], route_class=RawRoute)
logger = logging.getLogger("serving.decisions")


def _json_bytes(payload: dict) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


@raw_router.post(
    "",
    response_model=DecisionResponse,
    openapi_extra=openapi.body("DecisionRequest"),  # error statuses: serving.openapi
)
async def decide(http: Request) -> Response:
    """Decide one refund request: auto_approve only when every rule passes."""
    authorization = http.headers.get("authorization", "")
    status_code, content = await decide_raw(http.app.state, authorization, http.body)
    return Response(content, status_code, media_type="application/json")


async def decide_raw(state: State, authorization: str, read_body: ReadBody) -> tuple[int, bytes]:
    """`decide` on the raw request: its Authorization header and a way to read its body,
    read only once the caller is known; returns (status, JSON body).

    The app's decision lane calls this straight from ASGI (serving.middleware.DecisionLane).

    Raises:
        HTTPException: 401 for a missing or unknown token.
        AuditUnavailable: The audit log cannot be written.
    """
    # The caller resolved by hand, not by FastAPI's dependency resolution (~35 us a request,
    # ~6% of this route); every role may ask for decisions.
    caller = caller_for(state.tokens, authorization)
    service: Service = state.service
    coalescer: Coalescer = state.coalescer
    raw = await read_body()
    # Parsed here rather than as a body parameter: pydantic's JSON parser in one step is the
    # cheapest way in, and the errors are shaped exactly like FastAPI's.
    try:
        request = DecisionRequest.model_validate_json(raw)
    except ValidationError as exc:
        # Many errors: many unknown keys, refused by their count before pydantic's errors
        # are turned into Python (serving.bodies).
        problem = shape_problem(raw) if exc.error_count() > MAX_ERRORS else None
        detail = [problem] if problem is not None else field_errors(exc, ("body",))
        return 422, _json_bytes({"detail": detail})
    keys = 4 + len(request.order.model_fields_set)  # every top-level field is required
    problem = shape_problem(raw) if may_repeat_keys(raw, keys) else None
    if problem is not None:
        return 422, _json_bytes({"detail": [problem]})
    started = time.perf_counter()
    # Decided with the requests that arrived in the same event-loop turn (serving.coalesce):
    # one audit transaction for the group, each answer what it would have been alone.
    answer = await coalescer.decide(request)
    service.metrics.single_latency.observe(time.perf_counter() - started)
    # Every decision is in the audit log; the log line is for debugging (it costs ~10% of
    # the request at INFO).
    if logger.isEnabledFor(logging.DEBUG):
        body = answer.body
        logger.debug(
            "decision",
            extra={
                "fields": {
                    "refund_id": request.refund_id,
                    "caller": caller.label,
                    "status": answer.status,
                    "decision": body.get("decision"),
                    "reasons": [r["code"] for r in body.get("reasons", ())],
                    "replayed": body.get("replayed"),
                }
            },
        )
    return answer.status, answer.text.encode()


@raw_router.post(
    "/batch",
    response_model=BatchResponse,
    openapi_extra=openapi.body("BatchRequest"),
)
async def decide_batch(http: Request) -> Response:
    """Decide up to 1,000 requests; each item gets the status it would have had alone."""
    authorization = http.headers.get("authorization", "")
    status_code, content = await decide_batch_raw(http.app.state, authorization, http.body)
    return Response(content, status_code, media_type="application/json")


async def decide_batch_raw(
    state: State, authorization: str, read_body: ReadBody
) -> tuple[int, bytes]:
    """`decide_batch` on the raw request, as `decide_raw` is for `decide`.

    Raises:
        HTTPException: 401 for a missing or unknown token.
        AuditUnavailable: The audit log cannot be written.
    """
    caller = caller_for(state.tokens, authorization)
    service: Service = state.service
    raw = await read_body()
    # The body's shape first, whatever it holds (~3 ms for 1,000 items): it bounds what
    # pydantic does next. A repeated key anywhere, too many keys in an object or too many
    # objects: the whole batch is refused.
    problem = shape_problem(raw)
    if problem is not None and problem["type"] != "json_invalid":
        return 422, _json_bytes({"detail": [problem]})
    try:
        # Every item valid (the usual case): one parse of the whole body, ~5 ms for 1,000.
        items = ValidBatch.model_validate_json(raw).requests
        results: list[dict | None] = [None] * len(items)
        valid = list(enumerate(items))
    except ValidationError:
        # Something is wrong: the body as a list of anything, then each item on its own, in
        # JSON mode as the single route parses it, so an item gets the status it would
        # have had alone whatever its neighbours hold.
        try:
            batch = BatchRequest.model_validate_json(raw)
        except ValidationError as exc:
            return 422, _json_bytes({"detail": field_errors(exc, ("body",))})
        results = [None] * len(batch.requests)
        valid = []
        for i, item in enumerate(batch.requests):
            try:
                valid.append((i, DecisionRequest.model_validate_json(to_json(item))))
            except ValidationError as exc:
                results[i] = {"index": i, "status": 422, "error": field_errors(exc)}
    if problem is not None:  # JSON that pydantic reads and Python's parser does not
        return 422, _json_bytes({"detail": [problem]})
    started = time.perf_counter()
    replies = service.decide([request for _, request in valid]) if valid else []
    service.metrics.group_size.labels(route="batch").observe(len(valid))
    pieces: list[str | None] = [None] * len(results)
    for (i, _), answer in zip(valid, replies, strict=True):
        key = "decision" if answer.status == 200 else "error"
        # Spliced as text: each answer is already the JSON that was audited.
        pieces[i] = f'{{"index":{i},"status":{answer.status},"{key}":{answer.text}}}'
    for i, result in enumerate(results):
        if result is not None:
            pieces[i] = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    service.metrics.latency.labels(route="batch").observe(time.perf_counter() - started)
    logger.info(
        "batch decided",
        extra={
            "fields": {
                "caller": caller.label,
                "items": len(results),
                "invalid": len(results) - len(valid),
                "auto_approved": sum(a.body.get("decision") == "auto_approve" for a in replies),
            }
        },
    )
    body = '{"results":[' + ",".join(pieces) + "]}"  # type: ignore[arg-type]
    return 200, body.encode()


@router.get("/{refund_id}", response_model=DecisionResponse)
async def get_decision(refund_id: str, caller: DeciderDep, service: ServiceDep) -> Response:
    """The stored decision for a refund, as it was answered."""
    stored = service.open_audit().get(refund_id)
    if stored is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no decision for refund_id {refund_id}")
    return Response(stored.response.encode(), media_type="application/json")
