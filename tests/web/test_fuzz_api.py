"""Property-based fuzzing of the real server from its own OpenAPI document (schemathesis)."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cavra_ingest.http import openapi
from cavra_ingest.http.app import create_app
from cavra_ingest.settings import Settings
from tests.procs import Server, check_file

# Examples per operation and mode; `make faults` raises it.
EXAMPLES = int(os.environ.get("CAVRA_FUZZ_EXAMPLES", "30"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SEEN: Counter[int] = Counter()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db: Path = tmp_path_factory.mktemp("fuzz") / "activity.db"
    # Small limits so generated batches and bodies reach them.
    server = Server(db, env={"CAVRA_REQUEST_MAX_RECORDS": "20", "CAVRA_BODY_READ_TIMEOUT_S": "5"})
    asyncio.run(server.start())
    yield server
    code, _ = asyncio.run(server.terminate(timeout=20))
    assert code == 0
    assert "Traceback" not in server.log(), server.log()[-3000:]
    check_file(db, descriptive=False)  # whatever the fuzzer stored, counts still equal recounts
    print(f"fuzz: {SEEN.total()} requests, statuses {dict(sorted(SEEN.items()))}")


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    """Send a generated array as NDJSON lines; anything else (negative cases) as its JSON."""
    items = value if isinstance(value, list) else [value]
    # surrogatepass: a lone surrogate the generator made reaches the server as the invalid UTF-8 it is.
    return b"".join(json.dumps(item, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n" for item in items)


def load_schema() -> Any:
    # Built from an app like the server's at import time (schemathesis' lazy fixture loader does not work with
    # pytest 9); test_the_served_document_is_the_one_fuzzed checks the server serves this very document.
    schema = schemathesis.openapi.from_dict(openapi.build(create_app(Settings.of(activity_db=":memory:"))))
    schema.config.generation.update(
        max_examples=EXAMPLES, modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True
    )
    return schema


schema = load_schema()


def test_the_served_document_is_the_one_fuzzed(server: Server) -> None:
    served = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    assert served == schema.raw_schema


@pytest.mark.timeout(300)
@schema.parametrize()
def test_no_5xx_and_every_response_matches_the_document(case: Any, server: Server) -> None:
    response = case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30)
    SEEN[response.status_code] += 1
