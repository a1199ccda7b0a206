"""`GET /decisions/facets`: match counts per value of the sidebar fields, for the current filter."""

from __future__ import annotations

from aiohttp import web

from cavra_ingest.http.guards import cancel_on_disconnect
from cavra_ingest.http.keys import STORE_KEY
from cavra_ingest.http.middleware import json_reply
from cavra_ingest.http.replies import FacetCount, Facets
from cavra_ingest.http.routes.reads import DECISION_FILTERS, integer, parse_query, stored_values

DEFAULT_TOP, MAX_TOP = 10, 100


@cancel_on_disconnect
async def decision_facets(request: web.Request) -> web.Response:
    """Return the top values of each facet field with their counts, and the total."""
    held = await stored_values(request, "decisions", DECISION_FILTERS)
    query = parse_query(request, DECISION_FILTERS, scope="facets", extra=("top",), paging=False, held=held, search=True)
    top = min(max(integer(request.query, "top", DEFAULT_TOP), 1), MAX_TOP)
    counted = await request.app[STORE_KEY].facets(query, top)
    fields = {name: [FacetCount(value, count) for value, count in counts] for name, counts in counted.fields.items()}
    return json_reply(Facets(counted.total, top, fields))
