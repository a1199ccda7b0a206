"""A client process for crash tests: `URL SPOOL COUNT` records COUNT decisions, printing each id once
record() has returned; COUNT 0 only resends what the spool holds. Then flushes, closes and prints its stats."""

from __future__ import annotations

import asyncio
import json
import sys

from cavra_ingest.client import Client


async def main(url: str, spool: str, count: int) -> None:
    async with Client(
        url, spool=spool, when_full="spool", max_queue_records=200, batch_size=100, backoff_cap_s=0.3
    ) as client:
        for n in range(count):
            decision = {"decision": ("allow", "block", "warn")[n % 3], "session_id": f"proc-{n % 7}"}
            print(await client.record(decision), flush=True)
        await client.flush()
    print(json.dumps({"stats": vars(client.stats) | {"failed_by_status": {}}}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
