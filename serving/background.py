"""What a worker runs beside its requests: audit checkpoints and following the champion.

Both are started by the lifespan (`serving.lifespan`) and cancelled when the worker stops;
neither ever ends on an error (it is logged, and the next round tries again).
"""

from __future__ import annotations

import asyncio
import json
import logging

from serving.audit import AuditUnavailable
from serving.model import ModelUnavailable, champion_version
from serving.service import Service

logger = logging.getLogger("serving")


async def checkpoint_audit(service: Service, every_seconds: float = 0.25) -> None:
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


async def follow_champion(service: Service, every_seconds: float, retry_after: int = 10) -> None:
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
