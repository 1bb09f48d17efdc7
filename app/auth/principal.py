"""Who is calling: the result of authentication, the input of authorization and audit."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

TENANT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # the contract's tenant id rule
AGENT_MAX = 128


class Role(StrEnum):
    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"


PrincipalKind = Literal["api_key", "jwt", "dev"]


class Principal(BaseModel):
    """An authenticated caller. The tenant comes only from the verified credential."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str
    principal_id: str  # "key:<prefix>", "jwt:<sub>" or "dev:<tenant>" — stable, secret-free
    kind: PrincipalKind
    roles: frozenset[Role]
    agent_id: str | None = None  # set: the credential may act only as this agent
    key_id: str | None = None  # API key prefix or JWT `kid`/`jti`, for audit


def parse_roles(raw: object) -> frozenset[Role]:
    """Roles from a list or a space/comma separated string; unknown names are ignored."""
    if isinstance(raw, str):
        items: list[object] = re.split(r"[\s,]+", raw)
    elif isinstance(raw, list | tuple | set | frozenset):
        items = list(raw)
    else:
        return frozenset()
    known = {r.value for r in Role}
    return frozenset(Role(i) for i in items if isinstance(i, str) and i in known)


def valid_tenant(value: object) -> bool:
    return isinstance(value, str) and TENANT_RE.fullmatch(value) is not None


def valid_agent(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= AGENT_MAX
