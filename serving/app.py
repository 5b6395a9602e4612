"""The FastAPI application factory: `create_app(settings)`.

What the app is made of lives beside it: the routes (`serving.routes`), the middlewares
(`serving.middleware`), the error handlers (`serving.error_handlers`), and what a worker opens
and runs while it serves (`serving.lifespan`, `serving.background`).
"""

from __future__ import annotations

import functools
import time

from fastapi import FastAPI

from serving import error_handlers, openapi
from serving.config import Settings
from serving.lifespan import lifespan
from serving.middleware import DecisionAPI
from serving.routes import admin, decisions, health
from serving.supervisor import Clock

_NO_DOCS: dict = {"docs_url": None, "redoc_url": None, "openapi_url": None}


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
    app = DecisionAPI(
        title="fastrefund decision API",
        summary="Unshipped fast refunds: hard rules, buyer premium score, audited decisions.",
        version="1",
        lifespan=lifespan(settings, clock or time.time),
        generate_unique_id_function=lambda route: route.name,  # operationIds: decide, ...
        # The interactive docs and the document only in development: elsewhere they would
        # map the API for anyone who can reach it (a development server serves the same document).
        **({} if settings.environment == "development" else _NO_DOCS),
    )
    app.include_router(decisions.raw_router)  # served by the decision lane, documented here
    app.include_router(decisions.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    error_handlers.install(app)
    app.openapi = functools.partial(openapi.document, app)  # type: ignore[method-assign]
    app.max_body_bytes = settings.max_body_bytes  # enforced outermost, see DecisionAPI
    return app
