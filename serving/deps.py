"""Named dependencies: the service, and the caller's role from the bearer token."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request, status

from serving.config import Settings
from serving.service import Service

Role = Literal["decider", "admin"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a role and a label safe to log (never the token)."""

    role: Role
    label: str


# Every dependency is `async def`: FastAPI runs plain `def` dependencies in a thread pool,
# which costs more than the whole decision.


def token_table(settings: Settings) -> dict[bytes, Caller]:
    """Map the SHA-256 of each configured token to its caller; the tokens are not kept."""
    table: dict[bytes, Caller] = {}
    for role, tokens in (("decider", settings.decider_tokens), ("admin", settings.admin_tokens)):
        for i, token in enumerate(tokens):
            digest = hashlib.sha256(token.get_secret_value().encode()).digest()
            table[digest] = Caller(role, f"{role}#{i}")  # type: ignore[arg-type]
    return table


async def get_service(request: Request) -> Service:
    """The worker's service, built in the lifespan."""
    return request.app.state.service


def authenticate(request: Request) -> Caller:
    """The caller behind the request's bearer token.

    Raises:
        HTTPException: 401 when the token is missing or unknown.
    """
    return caller_for(request.app.state.tokens, request.headers.get("authorization", ""))


def caller_for(tokens: dict[bytes, Caller], authorization: str) -> Caller:
    """The caller behind an Authorization header's bearer token (`token_table` maps them).

    Raises:
        HTTPException: 401 when the token is missing or unknown.
    """
    scheme, _, token = authorization.partition(" ")
    if not token or scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    caller = tokens.get(hashlib.sha256(token.strip().encode()).digest())
    if caller is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller


async def require_decider(request: Request) -> Caller:
    """Deciders and admins may ask for decisions."""
    return authenticate(request)


async def require_admin(request: Request) -> Caller:
    """Only admins may change buyers, shops or the model."""
    caller = authenticate(request)
    if caller.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this route needs an admin token")
    return caller


ServiceDep = Annotated[Service, Depends(get_service)]
DeciderDep = Annotated[Caller, Depends(require_decider)]
AdminDep = Annotated[Caller, Depends(require_admin)]
