"""Liveness, readiness and Prometheus metrics.

`/healthz` and `/readyz` need no token: a load balancer calls them. What `/readyz` tells
anyone who asks is a fixed phrase per dependency; the reason behind it (file paths, SQLite
and registry messages) goes to the service's log, once each time it changes. `/metrics`
needs a token outside development (it names model versions, traffic and reasons).
"""

from __future__ import annotations

import logging
import time
import weakref

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.audit import WRITE_FAILURE_HOLD_SECONDS, AuditUnavailable
from serving.deps import ServiceDep, authenticate
from serving.openapi import Health, Readiness
from serving.service import Service
from serving.store import StoreUnavailable

router = APIRouter(tags=["health"])
logger = logging.getLogger("serving.health")

NOT_READY = {
    "model": "no champion loaded: fail closed (the service's log says why)",
    "store": "the online store cannot be read: fail closed (the service's log says why)",
    "audit": "the audit log cannot be written: decisions are answered 503 (the service's "
    "log says why)",
}
# Per worker, the reason last logged for each dependency: a probe every second logs a
# failure once, not every second.
_logged: weakref.WeakKeyDictionary[Service, dict[str, str]] = weakref.WeakKeyDictionary()
# `/readyz` needs no token, and its probe write takes the audit log's write lock: called in
# a loop, it would make decisions queue behind it. So a probe write that passed is trusted
# for PROBE_WRITE_SECONDS (per open log); one that failed is tried again on every call, so a
# recovery shows at once, and a decision's own failed write shows at once through
# `write_failed_recently`.
PROBE_WRITE_SECONDS = 1.0
_probed: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()
_monotonic = time.monotonic  # tests move it


def _not_ready(service: Service, name: str, reason: str) -> str:
    """The public phrase for a dependency that is not usable; the reason is logged."""
    logged = _logged.setdefault(service, {})
    if logged.get(name) != reason:
        logged[name] = reason
        logger.warning("not ready", extra={"fields": {"check": name, "reason": reason}})
    return NOT_READY[name]


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
    checks["model"] = (
        f"ok: version {champion.version}"
        if champion
        else _not_ready(service, "model", service.model_error)
    )
    store = service.open_store()
    try:
        meta = store.meta() if store else None
    except StoreUnavailable as exc:
        meta, checks["store"] = None, _not_ready(service, "store", str(exc))
    else:
        checks["store"] = (
            f"ok: as of {meta.as_of}" if meta else _not_ready(service, "store", service.store_error)
        )
    if meta is not None and service.snapshot_too_old(meta) is not None:
        # Decisions treat it as no store (SCORE_UNAVAILABLE): so does readiness.
        checks["store"] = (
            f"snapshot as of {meta.as_of} is older than the policy's max_snapshot_age_days "
            f"({service.policy.max_snapshot_age_days:g}): fail closed; run materialize"
        )
    if meta is not None and meta.policy_version != service.policy.version:
        # Still usable, but its shop eligibility was decided with another policy's thresholds.
        checks["store"] += (
            f" (built under policy {meta.policy_version}: run materialize again for "
            f"{service.policy.version})"
        )
    try:
        audit = service.open_audit()
        if _monotonic() - _probed.get(audit, -PROBE_WRITE_SECONDS) >= PROBE_WRITE_SECONDS:
            _probed.pop(audit, None)
            audit.ping(service.clock())  # a write, as a decision makes
            _probed[audit] = _monotonic()
        checks["audit"] = "ok"
        if audit.write_failed_recently():  # the ping can pass where a decision's insert fails
            checks["audit"] = (
                f"a write failed in the last {WRITE_FAILURE_HOLD_SECONDS:.0f} s (disk full or "
                "read-only?): decisions may be answered 503"
            )
    except AuditUnavailable as exc:
        checks["audit"] = _not_ready(service, "audit", str(exc) or service.audit_error)
    ready = all(value.startswith("ok") for value in checks.values())
    response.status_code = 200 if ready else 503
    return {"ready": ready, "checks": checks, "policy_version": service.policy.version}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(service: ServiceDep, request: Request) -> Response:
    """Prometheus text format; outside development, with any configured bearer token."""
    if service.settings.environment != "development":
        authenticate(request)  # 401 without a known token
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
