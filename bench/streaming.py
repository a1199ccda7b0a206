"""Streaming bench (docs/streaming.md): latency from a 2xx to the receiver at ~1,000 decisions/s, and ingest
throughput with three sinks active beside none, measured side by side in one run.

    .venv/bin/python -m bench.streaming [--rate 1000] [--seconds 15] [--load-seconds 8] [--rounds 2]

Everything runs on this machine: `cavra-ingest serve` processes on fresh SQLite files, the receivers
(a Standard Webhooks endpoint, a Splunk HEC, an OTLP/HTTP collector) in this process. Latency phase: the
receivers decode and verify what they get. Throughput phase: the receivers only read the body, so the
figure is the server's cost of delivering, not the receivers' work. Results: bench/results/streaming.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import decision
from tests.procs import Server
from tests.sinkreceivers import Receiver, decode_hec, decode_otlp, decode_webhook, http_receiver, until

RESULTS = Path(__file__).resolve().parent / "results"
ENV = {"CAVRA_UVLOOP": "1", "CAVRA_LOG_LEVEL": "WARNING", "CAVRA_ACCESS_LOG": "0"}
HEC_TOKEN = "bench-hec-token"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process and its children alive now (the delivery child) have used."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def skim(receiver: Receiver, body: bytes, headers: dict[str, str]) -> list[dict[str, Any]]:
    return []  # the throughput phase's receivers take the body and answer 200


@asynccontextmanager
async def three_receivers(decode: bool) -> AsyncIterator[list[tuple[dict[str, Any], Receiver]]]:
    """(sink body, receiver) for a webhook, a Splunk HEC and an OTLP collector."""
    async with AsyncExitStack() as stack:
        hook = await stack.enter_async_context(http_receiver(decode_webhook if decode else skim, "/hook"))
        hec = await stack.enter_async_context(
            http_receiver(decode_hec if decode else skim, "/services/collector/event", secret=HEC_TOKEN)
        )
        otlp = await stack.enter_async_context(http_receiver(decode_otlp if decode else skim, "/v1/logs"))
        yield [
            ({"name": "webhook", "kind": "webhook", "target": hook.url}, hook),
            ({"name": "splunk", "kind": "splunk_hec", "target": hec.url, "secret": HEC_TOKEN}, hec),
            ({"name": "otel", "kind": "otlp", "target": otlp.url}, otlp),
        ]


async def add_sinks(http: aiohttp.ClientSession, url: str, sinks: list[tuple[dict[str, Any], Receiver]]) -> None:
    for body, receiver in sinks:
        async with http.post(f"{url}/sinks", json=body) as response:
            assert response.status == 201, await response.text()
            reply = await response.json()
            if "secret" in reply:
                receiver.secret = reply["secret"]


async def latency(root: Path, rate: int, seconds: float) -> dict[str, Any]:
    """Post `rate` decisions/s (20 a request) for `seconds`; from each 2xx to each receiver's arrival."""
    server = Server(root / "latency.db", env=ENV)
    await server.start()
    acked: dict[str, float] = {}
    try:
        async with three_receivers(decode=True) as sinks, aiohttp.ClientSession() as http:
            await add_sinks(http, server.url, sinks)
            per_request = 20
            interval = per_request / rate
            arrivals: dict[str, dict[str, float]] = {body["name"]: {} for body, _ in sinks}

            def watch(name: str, receiver: Receiver) -> Callable[[int, list[dict[str, Any]]], int]:
                def behaviour(n: int, records: list[dict[str, Any]]) -> int:
                    now = time.monotonic()
                    for record in records:
                        arrivals[name].setdefault(record["decision_id"], now)
                    return 200

                return behaviour

            for body, receiver in sinks:
                receiver.behaviour = watch(body["name"], receiver)

            async def one(batch: list[dict[str, Any]]) -> None:
                async with http.post(f"{server.url}/decisions", json=batch) as response:
                    await response.read()
                    if response.status == 200:
                        now = time.monotonic()
                        acked.update((r["decision_id"], now) for r in batch)

            tasks = []
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < seconds:
                batch = [decision(session_id=f"s-{n % 50}") for _ in range(per_request)]
                tasks.append(asyncio.create_task(one(batch)))
                n += 1
                await asyncio.sleep(max(start + n * interval - time.monotonic(), 0))
            await asyncio.gather(*tasks)
            sent_s = time.monotonic() - start
            await until(lambda: all(len(a) >= len(acked) for a in arrivals.values()), 60, "every delivery")
            per_sink = {}
            everything: list[float] = []
            for name, seen in arrivals.items():
                lags = [seen[i] - t for i, t in acked.items()]
                everything += lags
                per_sink[name] = {"p50_s": round(percentile(lags, 0.5), 3), "p99_s": round(percentile(lags, 0.99), 3)}
    finally:
        server.kill()
    return {
        "decisions": len(acked),
        "rate_per_s": round(len(acked) / sent_s, 1),
        "p50_s": round(percentile(everything, 0.5), 3),
        "p99_s": round(percentile(everything, 0.99), 3),
        "max_s": round(max(everything), 3),
        "per_sink": per_sink,
    }


async def throughput(
    root: Path, label: str, with_sinks: bool, seconds: float, connections: int
) -> tuple[float, float, list[float]]:
    """Decisions/s stored by one server under `connections` posting arrays of 100 as fast as they can."""
    server = Server(root / f"{label}.db", env=ENV)
    await server.start()
    try:
        async with three_receivers(decode=False) as sinks, aiohttp.ClientSession() as http:
            if with_sinks:
                await add_sinks(http, server.url, sinks)
            stored = 0
            stop = time.monotonic() + seconds

            async def sender(k: int) -> None:
                nonlocal stored
                i = 0
                while time.monotonic() < stop:
                    batch = [decision(session_id=f"s-{k}-{i % 20}") for _ in range(100)]
                    i += 1
                    async with http.post(f"{server.url}/decisions", json=batch) as response:
                        await response.read()
                        if response.status == 200:
                            stored += len(batch)

            began, cpu = time.monotonic(), cpu_s(server.pid)
            await asyncio.gather(*(sender(k) for k in range(connections)))
            rate = stored / (time.monotonic() - began)
            # The server's CPU per stored decision over the window, its delivery child's included.
            cpu_us = (cpu_s(server.pid) - cpu) / max(stored, 1) * 1e6
            # How far behind each sink was when the load ended (records), to tell keeping up from not.
            lags: list[float] = []
            if with_sinks:
                async with http.get(f"{server.url}/sinks") as response:
                    lags = [item["lag_records"] for item in (await response.json())["items"]]
                # Then how long the sinks took to catch up once the load stopped.
                ended = time.monotonic()
                while time.monotonic() - ended < 300:
                    async with http.get(f"{server.url}/sinks") as response:
                        if all(item["lag_records"] == 0 for item in (await response.json())["items"]):
                            break
                    await asyncio.sleep(0.2)
                lags.append(round(time.monotonic() - ended, 1))
            return rate, cpu_us, lags
    finally:
        server.kill()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cavra-streaming-") as tmp:
        root = Path(tmp)
        result: dict[str, Any] = {"latency": await latency(root, args.rate, args.seconds)}
        runs: dict[str, list[float]] = {"none": [], "three": []}
        cpu: dict[str, list[float]] = {"none": [], "three": []}
        lags: list[list[float]] = []
        for r in range(args.rounds):
            # Interleaved, so a drift of the machine touches both alike.
            for label, on in (("none", False), ("three", True)):
                rate, cpu_us, lag = await throughput(root, f"{label}-{r}", on, args.load_seconds, args.connections)
                runs[label].append(round(rate, 1))
                cpu[label].append(round(cpu_us, 1))
                if on:
                    lags.append(lag)
        none, three = round(statistics.median(runs["none"]), 1), round(statistics.median(runs["three"]), 1)
        result["throughput"] = {"runs": runs, "none_per_s": none, "three_sinks_per_s": three,
                                "ratio": round(three / none, 3), "lag_at_end": lags,
                                "server_cpu_us_per_decision": cpu}  # fmt: skip
    return result


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    lat, tp = result["latency"], result["throughput"]
    lines = [
        "# Streaming bench",
        "",
        f"`python -m bench.streaming --rate {args.rate} --seconds {args.seconds} --load-seconds {args.load_seconds}"
        f" --rounds {args.rounds} --connections {args.connections}` on this machine (SQLite, `serve` processes).",
        "",
        f"Latency from the 2xx to the receiver at {lat['rate_per_s']} decisions/s ({lat['decisions']} decisions,"
        " three sinks: webhook, Splunk HEC, OTLP, each receiver verifying and decoding):",
        "",
        "| sink | p50 s | p99 s |",
        "|---|---|---|",
        *(f"| {name} | {v['p50_s']} | {v['p99_s']} |" for name, v in lat["per_sink"].items()),
        f"| all | {lat['p50_s']} | {lat['p99_s']} (max {lat['max_s']}) |",
        "",
        "Ingest throughput, arrays of 100, interleaved runs (median):",
        "",
        "| sinks | decisions/s | runs | server + delivery child CPU µs per decision |",
        "|---|---|---|---|",
        f"| none | {tp['none_per_s']} | {tp['runs']['none']} | {tp['server_cpu_us_per_decision']['none']} |",
        f"| three | {tp['three_sinks_per_s']} | {tp['runs']['three']} | {tp['server_cpu_us_per_decision']['three']} |",
        "",
        f"Ratio three/none: **{tp['ratio']}** (goal >= 0.90; p50 < 1 s, p99 < 3 s). Records each sink still had"
        f" to read when a loaded run ended (webhook, HEC, OTLP), then seconds to catch up: {tp['lag_at_end']}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--load-seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "streaming.json").write_text(json.dumps(outcome, indent=2) + "\n")
    text = report(outcome, arguments)
    (RESULTS / "streaming.md").write_text(text)
    print(text)
