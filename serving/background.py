"""What a worker runs beside its requests: audit checkpoints, following the champion, and
following the challenger it scores in shadow.

Both are started by the lifespan (`serving.lifespan`) and cancelled when the worker stops;
neither ever ends on an error (it is logged, and the next round tries again).
"""

from __future__ import annotations

import asyncio
import json
import logging

from modelcontract import CHALLENGER
from serving.audit import AuditUnavailable
from serving.drift_window import REFRESH_SECONDS
from serving.model import ModelUnavailable, champion_version
from serving.service import Service
from serving.shadow import load_challenger

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


async def refresh_challenger(service: Service, skip: str | None = None) -> str | None:
    """Load `@challenger` into `service.challenger` when it names another version than the
    one loaded (and than the champion); drop it when the alias is gone or names the champion.

    Never raises: a challenger that fails to load, or a registry that cannot be asked, is
    logged and counted (`fastrefund_unavailable{component="shadow"}`), and there is no
    shadow meanwhile. Decisions never wait for it (the load runs in a thread).

    Args:
        service: The worker's service.
        skip: A version not to try loading now (it failed a moment ago).

    Returns:
        The version `@challenger` names (None when unset or the registry is down).
    """
    settings = service.settings
    try:
        wanted = await asyncio.to_thread(
            champion_version, settings.tracking_uri(), settings.model_name, CHALLENGER
        )
    except Exception as exc:  # noqa: BLE001 - no shadow is not an outage
        logger.warning("challenger alias not read", extra={"fields": {"error": repr(exc)}})
        return None
    champion = service.champion
    if wanted is None or (champion is not None and wanted == champion.version):
        service.challenger = None
        return wanted
    loaded = service.challenger
    if (loaded is not None and loaded.version == wanted) or wanted == skip:
        return wanted
    try:
        challenger = await asyncio.to_thread(
            load_challenger,
            settings.tracking_uri(),
            settings.model_name,
            CHALLENGER,
            service.max_threshold,
        )
    except ModelUnavailable as exc:
        service.challenger = None  # the one loaded is no longer @challenger
        service.metrics.unavailable.labels(component="shadow").inc()
        logger.error(
            "challenger not loaded: decisions go on without a shadow",
            extra={"fields": {"error": str(exc)}},
        )
        return wanted
    service.challenger = challenger
    logger.info("challenger loaded in shadow", extra={"fields": {"version": challenger.version}})
    return wanted


async def follow_challenger(service: Service, every_seconds: float, retry_after: int = 10) -> None:
    """`refresh_challenger` every `every_seconds`, following the alias as it moves; a version
    that failed to load is tried again only every `retry_after` checks."""
    failed: str | None = None
    waits = 0
    while True:
        await asyncio.sleep(every_seconds)
        skip = failed if waits < retry_after else None
        waits += 1
        wanted = await refresh_challenger(service, skip)
        loaded = service.challenger.version if service.challenger is not None else None
        champion = service.champion.version if service.champion is not None else None
        if wanted in (None, loaded, champion):
            failed = None
        elif wanted != skip:  # just tried, and failed
            failed, waits = wanted, 0


async def refresh_drift(service: Service, every_seconds: float = REFRESH_SECONDS) -> None:
    """Recompute the drift gauges in a thread every `every_seconds`, so that a scrape of
    `/metrics` never computes them on the event loop (`serving.drift_window`)."""
    while True:
        await asyncio.sleep(every_seconds)
        try:
            await asyncio.to_thread(service.drift_gauges.refresh)
        except Exception:  # noqa: BLE001 - a bug here must not end the refreshes for good
            logger.exception("drift gauges not refreshed")
