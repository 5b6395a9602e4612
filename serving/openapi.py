"""The OpenAPI document, exact: what each route takes and every status it can answer.

FastAPI writes most of it from the routes; `document` completes what it cannot see: the
request bodies of the two decision routes (parsed by hand, `serving.routes.decisions`) as
schemas under `components`, the bearer scheme, the error bodies of every status a route can
answer (and only those), an example for every request and answer, and `/metrics` as text.
`tests/serving/test_openapi.py` validates it and generates a client from it.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from serving.bodies import MAX_ERRORS, MAX_KEYS, MAX_OBJECTS
from serving.schemas import DecisionRequest, Factor

REF = "#/components/schemas/{model}"


class ErrorBody(BaseModel):
    """An error: `detail` says what is wrong (401, 403, 404, 413, 503)."""

    detail: str


class FieldError(BaseModel):
    """One invalid field: where it is (`["body", "order", "paid_amount"]`), and why."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """A 422: every invalid field, named; the input is not echoed back."""

    detail: list[FieldError]


class ConflictBody(BaseModel):
    """A 409: the refund_id was already decided for a different request."""

    detail: str
    refund_id: str


class ModelVersion(BaseModel):
    """A registered model version."""

    name: str
    version: str | None


class BuyerView(BaseModel):
    """What the online store knows of a buyer, the admin overrides, and the champion's score
    with, for a buyer who is not premium, the factors behind it (when the version has a
    reference profile)."""

    buyer_id: str
    known: bool
    revoked: bool
    revoked_reason: str | None
    order_count: int | None
    as_of: str
    score: float | None = None
    threshold: float | None = None
    premium: bool | None = None
    factors: list[Factor] | None = None
    model: ModelVersion | None = None


class ShopView(BaseModel):
    """A shop's eligibility and the metrics it was decided from (absent for an unknown shop)."""

    shop_id: str
    known: bool
    eligible: bool
    reasons: str
    metrics: dict[str, Any] | None = None


class ReloadAnswer(BaseModel):
    """The champion now served, and the version served before."""

    model: ModelVersion
    previous: str | None


class Health(BaseModel):
    """The process is up."""

    status: str


class Readiness(BaseModel):
    """Each dependency's check ("ok: ..." or why not); 503 when any is not ok."""

    ready: bool
    checks: dict[str, str]
    policy_version: str


# A batch is answered 200 whatever its items hold: an item that is not a valid
# DecisionRequest gets its own 422 in `results`. Only the envelope is refused whole.
BATCH_REQUEST: dict[str, Any] = {
    "title": "BatchRequest",
    "description": "Up to 1,000 requests, each judged alone. The body is refused whole "
    f"(422) if it repeats a key in one object, holds an object of more than {MAX_KEYS} keys "
    f"or more than {MAX_OBJECTS:,} objects.",
    "type": "object",
    "additionalProperties": False,
    "required": ["requests"],
    "properties": {
        "requests": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": {
                "anyOf": [
                    {"$ref": REF.format(model="DecisionRequest")},
                    {"description": "Anything else: answered in its own result with a 422."},
                ]
            },
        }
    },
}


def body(model: str) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body is `model` (a schema under components)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}},
        }
    }


ERROR_MODELS: dict[int, type[BaseModel]] = {
    401: ErrorBody,
    403: ErrorBody,
    404: ErrorBody,
    409: ConflictBody,
    413: ErrorBody,
    422: ValidationErrorBody,
    503: ErrorBody,
}
WHY = {
    401: "Missing or invalid bearer token",
    403: "The route needs an admin token",
    404: "No decision stored for this refund_id",
    409: "The refund_id was already decided for a different request",
    413: "The request body is larger than FASTREFUND_MAX_BODY_BYTES",
    422: f"Invalid request: the detail names each field, at most {MAX_ERRORS} errors for "
    "the body (or a batch item) and then one `too_many_errors` entry counting the rest. A "
    f"body repeating a key in one object, with an object of more than {MAX_KEYS} keys or "
    f"more than {MAX_OBJECTS:,} objects, is refused whole with one entry saying which.",
    503: "A dependency is down (audit log, online store, registry): nothing was decided; "
    "fall back to merchant review",
}
ERROR_EXAMPLES: dict[int, Any] = {
    401: {"detail": "missing bearer token"},
    403: {"detail": "this route needs an admin token"},
    404: {"detail": "no decision for refund_id RF-unknown"},
    409: {
        "detail": "refund_id RF1 was already decided for a different request",
        "refund_id": "RF1",
    },
    413: {"detail": "request body is larger than 2000000 bytes"},
    422: {
        "detail": [
            {
                "loc": ["body", "order", "paid_amount"],
                "msg": 'Value error, must be a decimal string such as "299.99"',
                "type": "value_error",
            }
        ]
    },
    503: {"detail": "audit log unavailable: no decision recorded; fall back to merchant review"},
}

REQUEST = {
    "refund_id": "RF1",
    "requested_at": "2026-06-01T02:00:00Z",
    "kind": "refund_only",
    "order": {
        "order_id": "O1",
        "buyer_id": "B0000001",
        "shop_id": "S00001",
        "category": "apparel",
        "is_virtual": False,
        "is_custom": False,
        "paid_amount": "299.99",
        "currency": "CNY",
        "status": "paid_unshipped",
        "tracking_number": None,
    },
}
APPROVED = {
    "refund_id": "RF1",
    "decision": "auto_approve",
    "reasons": [],
    "buyer": {"premium": True, "score": 0.012, "threshold": 0.05},
    "model": {"name": "buyer-quality", "version": "3"},
    "policy_version": "2026-11-01",
    "note": "该用户为平台优质用户且订单满足极速退款条件,平台已自动审核通过卖家发货前仅退款申请",
    "decided_at": "2026-06-01T02:00:00.123Z",
    "replayed": False,
}
REVIEW = {
    **{k: v for k, v in APPROVED.items() if k != "note"},
    "refund_id": "RF2",
    "decision": "manual_review",
    "reasons": [{"code": "BUYER_NOT_PREMIUM", "message": "the buyer is not a premium user"}],
    "buyer": {"premium": False, "score": 0.31, "threshold": 0.05},
}
BUYER = {
    "buyer_id": "B0000001",
    "known": True,
    "revoked": True,
    "revoked_reason": "abuse confirmed by risk review",
    "order_count": 12,
    "as_of": "2026-06-01",
}
SHOP = {
    "shop_id": "S00001",
    "known": True,
    "eligible": True,
    "reasons": "",
    "metrics": {"tracking_after_refund": 0},
}
READY: dict[str, Any] = {
    "ready": True,
    "checks": {"model": "ok: version 3", "store": "ok: as of 2026-06-01", "audit": "ok"},
    "policy_version": "2026-11-01",
}

# Per operation: the error statuses it can answer, its request example, its 200 example.
OPERATIONS: dict[tuple[str, str], tuple[tuple[int, ...], Any, Any]] = {
    ("post", "/v1/refund-decisions"): ((401, 409, 413, 422, 503), REQUEST, APPROVED),
    ("post", "/v1/refund-decisions/batch"): (
        (401, 413, 422, 503),
        {"requests": [REQUEST]},
        {"results": [{"index": 0, "status": 200, "decision": APPROVED, "error": None}]},
    ),
    ("get", "/v1/refund-decisions/{refund_id}"): ((401, 404, 503), None, REVIEW),
    ("get", "/v1/admin/buyers/{buyer_id}"): ((401, 403, 422, 503), None, BUYER),
    ("post", "/v1/admin/buyers/{buyer_id}/revoke"): (
        (401, 403, 413, 422, 503),
        {"reason": "abuse confirmed by risk review"},
        BUYER,
    ),
    ("post", "/v1/admin/buyers/{buyer_id}/restore"): (
        (401, 403, 413, 422, 503),
        {"reason": "revocation reviewed: not abuse"},
        {**BUYER, "revoked": False, "revoked_reason": None},
    ),
    ("get", "/v1/admin/shops/{shop_id}"): ((401, 403, 422, 503), None, SHOP),
    ("put", "/v1/admin/shops/{shop_id}/eligibility"): (
        (401, 403, 413, 422, 503),
        {"eligible": True, "reason": "late shipment rate reviewed"},
        SHOP,
    ),
    ("post", "/v1/admin/model/reload"): (
        (401, 403, 503),
        None,
        {"model": {"name": "buyer-quality", "version": "4"}, "previous": "3"},
    ),
    ("get", "/healthz"): ((), None, {"status": "ok"}),
    ("get", "/readyz"): ((503,), None, READY),
    ("get", "/metrics"): (
        (),
        None,
        "# TYPE fastrefund_decisions_total counter\n"
        'fastrefund_decisions_total{decision="auto_approve"} 12.0\n',
    ),
}


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (built once, then cached on the app as FastAPI does)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    models: list[type[BaseModel]] = [DecisionRequest, *set(ERROR_MODELS.values())]
    _, defs = models_json_schema([(model, "validation") for model in models], ref_template=REF)
    schemas.update(defs["$defs"])
    # A category holding invisible, control or combining characters is refused
    # (serving.schemas.Order): a format names the rule, which a pattern cannot spell.
    schemas["Order"]["properties"]["category"].update(
        format="visible-text",
        description="Letters, digits, punctuation, symbols and spaces; no invisible, control "
        "or combining character. Excluded categories match whatever their case or width.",
    )
    schemas["BatchRequest"] = BATCH_REQUEST
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's; ours is exact
        schemas.pop(unused, None)
    doc["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A decider token (decision routes) or an admin token (any route).",
        }
    }
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            _complete(path, method, operation)
    app.openapi_schema = doc
    return doc


def _complete(path: str, method: str, operation: dict[str, Any]) -> None:
    errors, request, answer = OPERATIONS[(method, path)]
    if path.startswith("/v1/"):
        operation["security"] = [{"bearer": []}]
    if request is not None:
        content = operation["requestBody"]["content"]["application/json"]
        content["example"] = request
    ok = operation["responses"]["200"]
    if path == "/metrics":
        ok["content"] = {"text/plain": {"schema": {"type": "string"}, "example": answer}}
    else:
        ok["content"]["application/json"]["example"] = answer
    responses = {"200": ok}
    for status in errors:
        model = ERROR_MODELS[status]
        schema: dict[str, Any] = {"$ref": REF.format(model=model.__name__)}
        example: Any = ERROR_EXAMPLES[status]
        if path == "/readyz":  # not ready: the same body as ready
            schema, example = (
                {"$ref": REF.format(model="Readiness")},
                {
                    **READY,
                    "ready": False,
                    "checks": {**READY["checks"], "audit": "audit log unavailable: disk full"},
                },
            )
        responses[str(status)] = {
            "description": WHY[status],
            "content": {"application/json": {"schema": schema, "example": copy.deepcopy(example)}},
        }
    operation["responses"] = responses
