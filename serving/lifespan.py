"""A worker's life: what it opens and starts before the first request, and closes after.

The factory (`serving.app.create_app`) builds the app; this is what the app runs when a
worker starts: the policy read, the service and its coalescer built, the store, the audit log
and the champion opened (`Supervisor.start`), the background loops started; and, when it
stops, the loops cancelled and the databases closed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from modelcontract import redact_uri
from serving.backends import describe_location, flush_threads
from serving.background import (
    checkpoint_audit,
    follow_challenger,
    follow_champion,
    refresh_challenger,
    refresh_drift,
)
from serving.coalesce import Coalescer
from serving.config import Settings
from serving.deps import token_table
from serving.metrics import Metrics
from serving.policy import load_policy
from serving.service import Service
from serving.supervisor import Clock

logger = logging.getLogger("serving")

# mlflow.environment_variables.MLFLOW_ALLOW_PICKLE_DESERIALIZATION (MLflow 3; default true).
_PICKLE_SWITCH = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


def lifespan(settings: Settings, clock: Clock) -> Callable[[FastAPI], AbstractAsyncContextManager]:
    """The lifespan of an app built with these settings and this clock.

    It sets `app.state.service`, `app.state.coalescer` and `app.state.tokens`, which the
    routes and the decision lane read.
    """

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        # MLflow's switch for its loaders that unpickle: off while serving. The champion is
        # read without MLflow's loader anyway (`serving.model.load_champion`); this keeps
        # anything else in the process from unpickling a registry file.
        pickle_switch = os.environ.get(_PICKLE_SWITCH)
        os.environ[_PICKLE_SWITCH] = "false"
        policy = load_policy(settings.policy_path)
        service = Service(settings, policy, Metrics(), clock)
        app.state.service = service
        group_sizes = service.metrics.group_size.labels(route="single")
        coalescer = Coalescer(
            service.decide,
            max_batch=settings.coalesce_max,
            on_flush=group_sizes.observe,
            workers=flush_threads(settings),
        )
        app.state.coalescer = coalescer
        app.state.tokens = token_table(settings)
        await service.start()
        await refresh_challenger(service)  # the shadow, if any: never stops the worker
        logger.info(
            "serving",
            extra={
                "fields": {
                    "environment": settings.environment,
                    "policy_version": policy.version,
                    "model_version": service.champion.version if service.champion else None,
                    **describe_location(settings),  # never a password
                    "tracking_uri": redact_uri(settings.tracking_uri()),
                }
            },
        )
        # Startup leaves ~450k long-lived objects (MLflow, pandas, the model); a full
        # collection walks them all (~0.3 s, stalling every request in flight). Frozen, they
        # are left out of collections; what requests allocate is still collected.
        gc.collect()
        gc.freeze()
        background = [
            asyncio.create_task(checkpoint_audit(service)),
            asyncio.create_task(refresh_drift(service)),
        ]
        if settings.model_check_seconds > 0:
            background.append(
                asyncio.create_task(follow_champion(service, settings.model_check_seconds))
            )
            background.append(
                asyncio.create_task(follow_challenger(service, settings.model_check_seconds))
            )
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await coalescer.drain()  # flushes still in threads commit before the pool closes
            service.close()
            gc.unfreeze()
            if pickle_switch is None:
                os.environ.pop(_PICKLE_SWITCH, None)
            else:
                os.environ[_PICKLE_SWITCH] = pickle_switch

    return run
