"""Liveness, readiness and Prometheus metrics (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.audit import WRITE_FAILURE_HOLD_SECONDS, AuditUnavailable
from serving.deps import ServiceDep
from serving.openapi import Health, Readiness
from serving.store import StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness)
async def readyz(service: ServiceDep, response: Response) -> dict:
    """Ready when the champion, the online store and the audit log are all usable.

    The audit log is also reported not ready for `WRITE_FAILURE_HOLD_SECONDS` after any of
    its write transactions failed (a full disk, a read-only file system), so that a load
    balancer drains the instance rather than trusting a probe's write that happened to pass.

    Not ready still answers decisions (fail closed, manual_review), so a load balancer can
    prefer ready instances without the API ever approving blind.
    """
    checks: dict[str, str] = {}
    champion = service.champion
    checks["model"] = f"ok: version {champion.version}" if champion else service.model_error
    store = service.open_store()
    try:
        meta = store.meta() if store else None
    except StoreUnavailable as exc:
        meta, checks["store"] = None, str(exc)
    else:
        checks["store"] = f"ok: as of {meta.as_of}" if meta else service.store_error
    if meta is not None and meta.policy_version != service.policy.version:
        # Still usable, but its shop eligibility was decided with another policy's thresholds.
        checks["store"] += (
            f" (built under policy {meta.policy_version}: run materialize again for "
            f"{service.policy.version})"
        )
    try:
        audit = service.open_audit()
        audit.ping(service.clock())  # a write, as a decision makes
        checks["audit"] = "ok"
        if audit.write_failed_recently():  # the ping can pass where a decision's insert fails
            checks["audit"] = (
                f"audit log {audit.path}: a write failed in the last "
                f"{WRITE_FAILURE_HOLD_SECONDS:.0f} s (disk full or read-only?): decisions "
                "may be answered 503"
            )
    except AuditUnavailable as exc:
        checks["audit"] = str(exc) or service.audit_error
    ready = all(value.startswith("ok") for value in checks.values())
    response.status_code = 200 if ready else 503
    return {"ready": ready, "checks": checks, "policy_version": service.policy.version}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
