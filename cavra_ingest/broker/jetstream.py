"""JetStream mode: a stateless replica publishes validated records to a replicated log (docs/scale-out.md).

`BrokerSink` implements `sink.Sink`: `commit` returns once JetStream has stored every message of the request
(replicated when the stream is), with each record's status `accepted`. Workers (`workers/consumer.py`) commit
them to PostgreSQL. Session updates (`POST /sessions`) need the stored summary in their reply, so they still
go straight to the database through the replica's own batch writer.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import zlib
from typing import Any

import msgspec

from cavra_ingest.core.models import Accepted, RejectionReply
from cavra_ingest.core.sink import Sink, SinkHealth, Unavailable, WriteItem, WriteResult, WriterStats
from cavra_ingest.settings import Settings

log = logging.getLogger(__name__)

STREAM = "CAVRA_DECISIONS"
SUBJECT_PREFIX = "cavra.decisions"
DURABLE = "cavra-workers"
DEAD_LETTER_STREAM = "CAVRA_DEAD_LETTER"
DEAD_LETTER_SUBJECT = "cavra.deadletter"
# A publish retried after a lost acknowledgement carries the same Nats-Msg-Id: JetStream stores it once.
DUPLICATE_WINDOW_S = 120.0


class Envelope(msgspec.Struct, array_like=True):
    """One message: the records of one request that fall in one partition."""

    items: list[Accepted]


# What the dead-letter subject carries: the same shape `GET /ingest/rejections` lists.
Rejection = RejectionReply


ENVELOPE_ENCODER = msgspec.msgpack.Encoder()
ENVELOPE_DECODER = msgspec.msgpack.Decoder(Envelope)


def servers(settings: Settings) -> list[str]:
    return [url.strip() for url in settings.broker.broker_url.split(",") if url.strip()]


def partition(session_id: str, partitions: int) -> int:
    """The partition of a session: stable across replicas and restarts (crc32, not Python's salted hash)."""
    return zlib.crc32(session_id.encode()) % partitions


async def connect(settings: Settings) -> Any:
    """Connect to the NATS cluster (any listed server; reconnects forever) and make the streams if missing."""
    import nats

    async def reported(exc: Exception) -> None:
        log.warning("NATS connection: %s", exc)

    nc = await nats.connect(
        servers=servers(settings),
        name="cavra-ingest",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=settings.broker.broker_timeout_s,
        error_cb=reported,
    )
    try:
        await ensure_streams(nc.jetstream(timeout=settings.broker.broker_timeout_s), settings)
    except BaseException:
        await nc.close()
        raise
    await check_sync(settings)
    return nc


async def server_syncs(url: str, timeout: float) -> bool | None:
    """Whether one NATS server fsyncs its stream files on every write (its /varz `jetstream.config`); None
    when it cannot be read."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.get(f"{url.rstrip('/')}/varz") as response:
                varz = await response.json(content_type=None)
        config = varz["jetstream"]["config"]
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot read %s/varz to check JetStream's sync setting: %s", url, exc)
        return None
    return bool(config.get("sync_always", False))


async def check_sync(settings: Settings) -> dict[str, bool | None]:
    """Warn for every NATS server that syncs on a timer: a 202 then survives a process crash, not a power cut
    of every node together (docs/guarantees.md). The servers are read through CAVRA_BROKER_MONITOR_URL."""
    urls = [url.strip() for url in settings.broker.broker_monitor_url.split(",") if url.strip()]
    if not urls:
        log.info("JetStream sync setting not checked: CAVRA_BROKER_MONITOR_URL names no NATS monitoring address")
        return {}
    found = {url: await server_syncs(url, settings.broker.broker_timeout_s) for url in urls}
    for url, syncs in found.items():
        if syncs is False:
            log.warning(
                "NATS server %s does not sync its stream files on every write (sync_interval is not always):"
                " an acknowledged 202 can be lost if every node loses power together; set"
                " `jetstream { sync_interval: always }` (deploy/nats.conf)",
                url,
            )
    return found


# Pause between two looks for a stream another replica is creating.
STREAM_RETRY_S = 0.1


async def ensure_streams(js: Any, settings: Settings) -> None:
    """Create the decision stream and the dead-letter stream when they do not exist yet."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    wanted = [
        StreamConfig(
            name=STREAM,
            subjects=[f"{SUBJECT_PREFIX}.*"],
            storage=StorageType.FILE,
            num_replicas=settings.broker.stream_replicas,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=DEAD_LETTER_STREAM,
            subjects=[DEAD_LETTER_SUBJECT],
            storage=StorageType.FILE,
            num_replicas=settings.broker.stream_replicas,
            max_age=30 * 86400.0,
        ),
    ]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.broker.broker_timeout_s
    for config in wanted:
        while True:
            try:
                await js.stream_info(config.name)
                break
            except NotFoundError:
                try:
                    await js.add_stream(config)
                    break
                except Exception:
                    # Another replica or worker is creating it, or a restarted cluster is still electing its
                    # leader (the stream is then neither found nor creatable): look again, until the timeout.
                    if loop.time() >= deadline:
                        raise
                    await asyncio.sleep(STREAM_RETRY_S)


class BrokerSink:
    """Publish each request's records to JetStream and answer once stored there. Implements `Sink`."""

    def __init__(self, nc: Any, settings: Settings, direct: Sink) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=settings.broker.broker_timeout_s)
        self.settings = settings
        self.direct = direct
        self.closing = False
        self.inflight = 0
        self.stats = WriterStats()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    def admit(self, records: int) -> None:
        if self.closing:
            raise Unavailable("server is shutting down; retry later")
        if self.inflight + max(records, 1) > self.settings.writer.queue_max_records:
            raise Unavailable("too many records being published; retry later")
        if not self.nc.is_connected:
            raise Unavailable("the JetStream log is unreachable; nothing was written, retry later")

    async def commit(self, items: list[WriteItem]) -> list[WriteResult]:
        if not all(isinstance(item, Accepted) for item in items):
            return await self.direct.commit(items)
        self.admit(len(items))
        groups: dict[int, list[Accepted]] = {}
        for item in items:
            assert isinstance(item, Accepted)
            groups.setdefault(partition(item.record.session_id, self.settings.broker.stream_partitions), []).append(
                item
            )
        self.inflight += len(items)
        self._idle.clear()
        try:
            await asyncio.gather(*(self._publish(p, group) for p, group in groups.items()))
        except Exception as exc:
            self.stats.failed_transactions += 1
            # A partition that was stored is not taken back: a retry makes its records duplicates, stored once.
            raise Unavailable(f"the JetStream log did not acknowledge the records; retry: {exc}") from exc
        finally:
            self.inflight -= len(items)
            if not self.inflight:
                self._idle.set()
        self.stats.transactions += 1
        self.stats.records += len(items)
        return [WriteResult("accepted", item.payload) for item in items if isinstance(item, Accepted)]

    async def _publish(self, part: int, group: list[Accepted]) -> None:
        data = ENVELOPE_ENCODER.encode(Envelope(group))
        headers = {"Nats-Msg-Id": uuid.uuid4().hex}
        subject = f"{SUBJECT_PREFIX}.{part}"
        try:
            await self.js.publish(subject, data, stream=STREAM, headers=headers)
        except TimeoutError:
            # The acknowledgement may be what was lost (a leader change): the same id is stored once.
            await self.js.publish(subject, data, stream=STREAM, headers=headers)

    def health(self) -> SinkHealth:
        return SinkHealth(self.closing, self.inflight, self.settings.writer.queue_max_records, self.stats)

    def begin_stop(self) -> None:
        self.closing = True

    async def close(self, deadline_s: float) -> None:
        """Let publishes in flight finish (their clients are waiting for the acknowledgement), then disconnect."""
        self.closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), deadline_s)
        except TimeoutError:
            log.error("publishes still in flight after %.1fs; closing", deadline_s)
        await self.nc.drain()
