"""A sink's filter is a `GET /decisions` query string: parsed here by the very parser that route uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from cavra_ingest.core.sinks import SinkDef
from cavra_ingest.http.auth import PRINCIPAL, Principal
from cavra_ingest.http.routes.reads import ENUMS, parse_query, stored_values
from cavra_ingest.store import ListQuery
from cavra_ingest.store.base import DECISION_FILTERS
from cavra_ingest.store.jsonfile import matches

SCOPE = "sink"


def _request(app: web.Application, text: str, tenant_id: str | None) -> web.Request:
    # The same request object the route parses, carrying the sink's tenant as the caller's binding.
    request = make_mocked_request("GET", "/decisions?" + text if text else "/decisions", app=app)
    request[PRINCIPAL] = Principal(None, frozenset({"read"}), tenant_id=tenant_id)
    return request


async def checked_query(app: web.Application, text: str, tenant_id: str | None) -> ListQuery:
    """Parse a filter as `GET /decisions` would, stored out-of-enum values included; its 400s pass through."""
    request = _request(app, text, tenant_id)
    held = await stored_values(request, "decisions", DECISION_FILTERS)
    return parse_query(request, DECISION_FILTERS, scope=SCOPE, held=held, paging=False, search=True)


def compiler(app: web.Application) -> Callable[[SinkDef], Callable[[dict[str, Any]], bool] | None]:
    """Turn a stored sink's filter into a test of one record (its values were checked when it was set)."""

    def compile_filter(sink: SinkDef) -> Callable[[dict[str, Any]], bool] | None:
        request = _request(app, sink.filter, sink.tenant_id)
        if sink.tenant_id is None and not request.query:
            return None  # every record: nothing to test
        held = {name: frozenset(request.query.getall(name, [])) for name in ENUMS}
        query = parse_query(request, DECISION_FILTERS, scope=SCOPE, held=held, paging=False, search=True)
        tenant = sink.tenant_id

        def test(fields: dict[str, Any]) -> bool:
            # The binding is in the query already; checked again so no filter can ever widen it.
            if tenant is not None and fields.get("tenant_id") != tenant:
                return False
            return matches(fields, query, "timestamp")

        return test

    return compile_filter
