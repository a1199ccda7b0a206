"""`GET /decisions/facets`: match counts per value of the sidebar fields, for the current filter."""

from __future__ import annotations

from aiohttp import web

from .keys import STORE_KEY
from .models import ENCODER
from .reads import DECISION_FILTERS, BadQuery, bad_query, integer, parse_query

DEFAULT_TOP, MAX_TOP = 10, 100


async def decision_facets(request: web.Request) -> web.Response:
    """Return the top values of each facet field with their counts, and the total."""
    try:
        query = parse_query(request, DECISION_FILTERS, scope="facets", extra=("top",), paging=False)
        top = min(max(integer(request.query, "top", DEFAULT_TOP), 1), MAX_TOP)
    except BadQuery as exc:
        return bad_query(exc)
    facets = await request.app[STORE_KEY].facets(query, top)
    body = {
        "total": facets.total,
        "top": top,
        "facets": {
            name: [{"value": value, "count": count} for value, count in counts]
            for name, counts in facets.fields.items()
        },
    }
    return web.Response(body=ENCODER.encode(body), content_type="application/json")
