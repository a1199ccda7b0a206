"""The real app, but its sink answers "created" at once without the writer or the store.

Everything a single-decision POST costs the event loop apart from the store: the middlewares (request
id, access log, metrics, errors, Host check, auth), the body read, validation, the reply. A benchmark
tool only: `python -m bench.null_sink_server --port N` with the usual CAVRA_* settings (a SQLite file
is still opened, for the tokens and the runtime's start-up).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

from aiohttp import web

from cavra_ingest.cli.serve import event_loop
from cavra_ingest.core.sink import SinkHealth, WriteItem, WriteResult, WriterStats
from cavra_ingest.http import logs, serving
from cavra_ingest.http.app import create_app
from cavra_ingest.http.keys import SINK_KEY
from cavra_ingest.settings import Settings


class NullSink:
    def __init__(self) -> None:
        self.stats = WriterStats()

    def admit(self, records: int) -> None:
        pass

    async def commit(self, items: list[WriteItem]) -> list[WriteResult]:
        self.stats.transactions += 1
        self.stats.records += len(items)
        return [WriteResult("created", item.payload) for item in items]  # type: ignore[union-attr]

    def health(self) -> SinkHealth:
        return SinkHealth(False, 0, 1, self.stats)


async def null_sink(app: web.Application) -> AsyncIterator[None]:
    app[SINK_KEY] = NullSink()  # type: ignore[assignment]
    yield


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    settings = Settings.from_env(port=args.port)
    logs.configure(settings.server.log_format, settings.server.log_level)
    app = create_app(settings)
    app.cleanup_ctx.append(null_sink)  # after the runtime's, so it replaces the writer as the sink
    serving.run(app, settings, event_loop(settings), access_log=None)


if __name__ == "__main__":
    main()
