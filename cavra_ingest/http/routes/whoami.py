"""`GET /auth/whoami`: the calling token or signed-in person, its scopes, tenant and quota use."""

from __future__ import annotations

from aiohttp import web

from cavra_ingest.http.auth import principal_of
from cavra_ingest.http.keys import QUOTAS_KEY
from cavra_ingest.http.middleware import json_reply
from cavra_ingest.http.replies import Whoami


async def whoami(request: web.Request) -> web.Response:
    """Say which token is calling and which tenant it sees (the console shows it)."""
    principal = principal_of(request)
    used = None
    if principal.daily_quota is not None and principal.token_id is not None:
        used = await request.app[QUOTAS_KEY].used(principal.token_id)
    reply = Whoami(
        authenticated=principal.token_id is not None or principal.person is not None,
        token_id=principal.token_id,
        name=principal.name,
        scopes=sorted(principal.scopes),
        tenant_id=principal.tenant_id,
        workspace_id=principal.workspace_id,
        daily_quota=principal.daily_quota,
        used_today=used,
        person=principal.person,
    )
    return json_reply(reply)
