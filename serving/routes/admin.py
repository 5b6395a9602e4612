"""`/v1/admin`: revoke or restore buyers, set shop eligibility, reload the model."""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from serving.audit import AuditUnavailable
from serving.backends import Store
from serving.deps import AdminDep, ServiceDep
from serving.model import Champion, ModelUnavailable
from serving.openapi import BuyerView, ReloadAnswer, ShopView
from serving.records import Override
from serving.schemas import Id, RevocationChange, ShopEligibilityChange
from serving.service import Service
from serving.store import StoreUnavailable

router = APIRouter(prefix="/v1/admin", tags=["admin"])
logger = logging.getLogger("serving.admin")
# Admin writes to the store, one at a time in the order they were recorded (two changes to a
# buyer waiting on a refresh's lock in two threads could land the wrong way round), off the
# event loop, and out of the default pool the checkpoints and the registry watcher use.
_STORE_WRITES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="admin-store-write")

# Ids as decision requests spell them (1-64 printable ASCII, no spaces): an id no request
# can carry (" B1", a zero-width space) is a 422, not an override nobody's request matches.
BuyerId = Annotated[Id, Path(description="The buyer_id decision requests carry.")]
ShopId = Annotated[Id, Path(description="The shop_id decision requests carry.")]


def _store(service: Service) -> Store:
    store = service.open_store()
    if store is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, service.store_error)
    return store


def _audit(service: Service, actor: str, action: str, target: str, reason: str, detail: dict):
    service.open_audit().record_admin_action(
        service.clock(), actor, action, target, reason, json.dumps(detail, ensure_ascii=False)
    )
    logger.info(
        "admin action",
        extra={"fields": {"actor": actor, "action": action, "target": target, "reason": reason}},
    )


async def _change(
    service: Service, store: Store, override: Override, action: str, detail: dict
) -> None:
    """Record the admin action with the override (kept durably in the audit log, which every
    store file is given again when it is replaced), then make the change in the store (in a
    thread: a refresh can hold the store's write lock for seconds, and decisions must go on
    meanwhile). Changes from one worker are made in the order they were recorded.

    Raises:
        HTTPException: 503 when the store refused the change; the override is then taken
            back and the audit log says so.
    """
    audit = service.open_audit()
    previous = audit.record_override(override, action, json.dumps(detail, ensure_ascii=False))
    logger.info(
        "admin action",
        extra={
            "fields": {
                "actor": override.actor,
                "action": action,
                "target": override.target,
                "reason": override.reason,
            }
        },
    )
    try:
        # Queued right after recording, with no await between: writes keep the log's order.
        await asyncio.get_running_loop().run_in_executor(
            _STORE_WRITES, store.apply_overrides, [override]
        )
    except StoreUnavailable as exc:
        try:
            audit.revert_override(
                override, previous, f"{action}_failed", json.dumps({"error": str(exc)})
            )
        except AuditUnavailable:
            logger.exception("admin action failed and could not be recorded as failed")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"{action} not made, try again: {exc}"
        ) from exc


def _buyer_view(store: Store, buyer_id: str, service: Service | None = None) -> dict:
    buyer = store.buyer(buyer_id)
    known = buyer is not None and len(buyer.features) > 0
    standing = service.buyer_standing(buyer) if service is not None and known else {}
    return {
        **standing,
        "buyer_id": buyer_id,
        "known": known,
        "revoked": buyer is not None and buyer.revoked,
        "revoked_reason": buyer.revoked_reason if buyer is not None and buyer.revoked else None,
        # None for a buyer the snapshot does not know, revoked by an admin or not.
        "order_count": buyer.order_count if buyer is not None and known else None,
        "as_of": store.meta().as_of,
    }


@router.get("/buyers/{buyer_id}", response_model=BuyerView)
async def get_buyer(buyer_id: BuyerId, caller: AdminDep, service: ServiceDep) -> dict:
    """What the online store knows about a buyer, the champion's score and, for a buyer who
    is not premium, the factors that raised it most, in words."""
    return _buyer_view(_store(service), buyer_id, service)


@router.post("/buyers/{buyer_id}/revoke", response_model=BuyerView)
async def revoke_buyer(
    buyer_id: BuyerId, change: RevocationChange, caller: AdminDep, service: ServiceDep
) -> dict:
    """Revoke the service for a buyer (POLICY.md: abuse); survives every refresh."""
    store = _store(service)
    override = Override("buyer", buyer_id, True, change.reason, caller.label, service.clock())
    await _change(service, store, override, "revoke_buyer", {})
    return _buyer_view(store, buyer_id)


@router.post("/buyers/{buyer_id}/restore", response_model=BuyerView)
async def restore_buyer(
    buyer_id: BuyerId, change: RevocationChange, caller: AdminDep, service: ServiceDep
) -> dict:
    """Restore the service for a buyer, overriding a revocation from the log too."""
    store = _store(service)
    override = Override("buyer", buyer_id, False, change.reason, caller.label, service.clock())
    await _change(service, store, override, "restore_buyer", {})
    return _buyer_view(store, buyer_id)


def _shop_view(store: Store, shop_id: str) -> dict:
    shop = store.shop(shop_id)
    if shop is None:
        return {"shop_id": shop_id, "known": False, "eligible": False, "reasons": "unknown"}
    return {
        "shop_id": shop_id,
        "known": bool(shop.metrics),
        "eligible": shop.eligible,
        "reasons": shop.reasons,
        "metrics": shop.metrics,
    }


@router.get("/shops/{shop_id}", response_model=ShopView)
async def get_shop(shop_id: ShopId, caller: AdminDep, service: ServiceDep) -> dict:
    """A shop's eligibility and the metrics it was decided from, including the approved
    pre-shipment refunds whose order later got a tracking number (POLICY.md's risk)."""
    return _shop_view(_store(service), shop_id)


@router.put("/shops/{shop_id}/eligibility", response_model=ShopView)
async def set_shop_eligibility(
    shop_id: ShopId, change: ShopEligibilityChange, caller: AdminDep, service: ServiceDep
) -> dict:
    """Grant or withdraw the service for a shop; survives every refresh."""
    store = _store(service)
    override = Override(
        "shop", shop_id, change.eligible, change.reason, caller.label, service.clock()
    )
    await _change(service, store, override, "set_shop_eligibility", {"eligible": change.eligible})
    return _shop_view(store, shop_id)


@router.post("/model/reload", response_model=ReloadAnswer)
async def reload_model(caller: AdminDep, service: ServiceDep) -> dict:
    """Load the current champion and swap it in without dropping requests."""
    previous = service.champion.version if service.champion is not None else None

    def record(champion: Champion) -> None:
        # Before the swap: a model never serves without its reload in the audit log (an
        # audit log that cannot be written is a 503 and the old model keeps serving).
        _audit(
            service,
            caller.label,
            "reload_model",
            champion.name,
            "admin reload",
            {"previous": previous, "version": champion.version},
        )

    try:
        champion = await service.load_model(before_swap=record)
    except ModelUnavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"reload failed, still serving version {previous}: {exc}"
            if previous is not None
            else f"reload failed, no model is being served: {exc}",
        ) from exc
    return {"model": {"name": champion.name, "version": champion.version}, "previous": previous}
