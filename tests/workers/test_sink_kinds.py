"""The syslog and parquet kinds against real readers: rsyslog (imtcp -> file) and DuckDB over the archive."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cavra_ingest.http.keys import ACCESS_KEY
from cavra_ingest.store.signin import AccessEvent
from tests.conftest import REQUIRE_SERVICES, MakeClient, decision
from tests.procs import free_port
from tests.sinkreceivers import until
from tests.web.test_sinks import FAST, add_sink, post, settled, status

# RSYSLOG_SyslogProtocol23Format: <PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG
LINE = re.compile(
    r'^<(\d+)>1 (\S+) (\S+) cavra-ingest (\d+) decision \[cavra@32473 ((?:[a-z_]+="(?:[^"\\]|\\.)*" ?)+)\] (.*)$'
)
PARAM = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def rsyslogd() -> str:
    found = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
    if found is None:
        message = "rsyslogd is not installed (make rsyslog)"
        if REQUIRE_SERVICES:
            pytest.fail(message + "; CAVRA_REQUIRE_SERVICES=1 requires it", pytrace=False)
        pytest.skip(message)
    return found


@asynccontextmanager
async def running_rsyslog(tmp_path: Path, tls: tuple[Path, Path] | None = None) -> AsyncIterator[tuple[int, Path]]:
    """A real rsyslogd: imtcp on a free port (TLS through gtls when given a certificate and key), every
    message to a file, as this user; killed in finally."""
    binary = rsyslogd()
    port, out = free_port(), tmp_path / "received.log"
    conf = tmp_path / "rsyslog.conf"
    if tls is None:
        head = f'global(workDirectory="{tmp_path}")\nmodule(load="imtcp")\n'
    else:
        if not list(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so")) + list(
            Path("/usr/lib").glob("rsyslog/lmnsd_gtls.so")
        ):
            message = "rsyslog's gtls driver is not installed (make rsyslog installs rsyslog-gnutls)"
            if REQUIRE_SERVICES:
                pytest.fail(message + "; CAVRA_REQUIRE_SERVICES=1 requires it", pytrace=False)
            pytest.skip(message)
        cert, key = tls
        head = (
            f'global(workDirectory="{tmp_path}" DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{cert}"'
            f' DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")\n'
            'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")\n'
        )
    conf.write_text(
        head + f'input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="cavra")\n'
        f'ruleset(name="cavra") {{ action(type="omfile" file="{out}" template="RSYSLOG_SyslogProtocol23Format") }}\n'
    )
    log = open(tmp_path / "rsyslogd.out", "wb")
    proc = subprocess.Popen([binary, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "rsyslogd.out").read_text()) from None
                await asyncio.sleep(0.05)
        yield port, out
    finally:
        proc.kill()
        proc.wait(5)
        log.close()


@pytest.fixture
async def rsyslog(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    async with running_rsyslog(tmp_path) as found:
        yield found


def received(out: Path) -> list[tuple[dict[str, str], dict[str, Any]]]:
    if not out.exists():
        return []
    found = []
    for line in out.read_text().splitlines():
        match = LINE.match(line)
        assert match, f"not an RFC 5424 line of ours: {line[:200]}"
        params = dict(PARAM.findall(match.group(5)))
        found.append((params, msgspec.json.decode(match.group(6))))
    return found


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_syslog_reaches_rsyslog_and_every_line_names_its_decision(
    make_client: MakeClient, rsyslog: tuple[int, Path], kind: str
) -> None:
    port, out = rsyslog
    client = await make_client(kind, **FAST)
    await add_sink(client, name="syslog", kind="syslog", target=f"tcp://127.0.0.1:{port}")
    records = [decision(decision="block", severity="critical", target='quote " and ] bracket') for _ in range(5)]
    records += [decision() for _ in range(45)]
    await post(client, records)
    wanted = {r["decision_id"] for r in records}
    await until(lambda: {p["decision_id"] for p, _ in received(out)} >= wanted, what="50 syslog lines")
    for params, record in received(out):
        assert params["decision_id"] == record["decision_id"]
        assert params["decision"] == record["decision"]
    assert (await settled(client, "syslog", 50))["delivered"] == 50


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_parquet_archive_read_by_duckdb_matches_the_store(
    make_client: MakeClient, tmp_path: Path, kind: str
) -> None:
    import duckdb

    client = await make_client(kind, **FAST, sink_batch_max=40)
    archive = tmp_path / "archive"
    await add_sink(client, name="archive", kind="parquet", target=str(archive))
    records = []
    for i in range(150):
        tenant = ["ten-a", "ten-b"][i % 2]
        day = ["2026-03-01", "2026-03-02", "2026-03-03"][i % 3]
        records.append(decision(tenant_id=tenant, session_id=f"s-{tenant}", decision=["allow", "block"][i % 5 == 0],
                                timestamp=f"{day}T10:{i // 60:02d}:{i % 60:02d}+00:00"))  # fmt: skip
    await post(client, records[:70])
    await post(client, records[70:])

    async def done() -> bool:
        shown = await status(client, "archive")
        return bool(shown["delivered"] == 150 and shown["lag_records"] == 0)

    deadline = time.monotonic() + 20
    while not await done():
        assert time.monotonic() < deadline, "the archive did not catch up"
        await asyncio.sleep(0.05)
    assert not list(archive.rglob(".*.tmp")), "no temporary file is left"
    rows = duckdb.sql(
        f"SELECT tenant, CAST(date AS VARCHAR), count(*), sum(CASE WHEN decision = 'block' THEN 1 ELSE 0 END)"
        f" FROM read_parquet('{archive}/**/*.parquet', hive_partitioning=true) GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    expected = []
    for tenant in ("ten-a", "ten-b"):
        for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
            query = f"/decisions?tenant_id={tenant}&since={day}T00:00:00Z&until={day}T23:59:59.999999Z&limit=1"
            total = (await (await client.get(query)).json())["total"]
            blocks = (await (await client.get(query + "&decision=block")).json())["total"]
            if total:
                expected.append((tenant, day, total, blocks))
    assert rows == expected and sum(row[2] for row in rows) == 150


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here (the test's own CA)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


async def test_syslog_over_tls_with_octet_counting(make_client: MakeClient, tmp_path: Path) -> None:
    import ssl

    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    frames: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # RFC 6587 octet counting: "<length> <message>", back to back.
        try:
            while True:
                length = int((await reader.readuntil(b" ")).strip())
                frames.append(await reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    client = await make_client(**FAST)
    try:
        await add_sink(client, name="tls", kind="syslog", target=f"tls://127.0.0.1:{port}?ca={cert}")
        records = [decision() for _ in range(20)]
        await post(client, records)
        await until(lambda: len(frames) >= 20, what="20 frames over TLS")
        for frame, record in zip(frames, records, strict=True):
            match = LINE.match(frame.decode())
            assert match and dict(PARAM.findall(match.group(5)))["decision_id"] == record["decision_id"]
    finally:
        await client.close()  # its sender's connection first: wait_closed waits for every connection
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


async def test_syslog_over_tls_reaches_rsyslog(make_client: MakeClient, tmp_path: Path) -> None:
    """RFC 5425: the same frames over TLS to rsyslog's gtls driver, the server's certificate checked."""
    tls = self_signed(tmp_path)
    async with running_rsyslog(tmp_path, tls) as (port, out):
        client = await make_client(**FAST)
        await add_sink(client, name="tls", kind="syslog", target=f"tls://127.0.0.1:{port}?ca={tls[0]}")
        records = [decision(decision="block") for _ in range(10)]
        await post(client, records)
        wanted = {r["decision_id"] for r in records}
        await until(lambda: {p["decision_id"] for p, _ in received(out)} >= wanted, what="10 lines over TLS")
        await client.close()


ACCESS_LINE = re.compile(
    r'^<(\d+)>1 (\S+) (\S+) cavra-ingest (\d+) access \[cavra-access@32473 ((?:[a-z_]+="(?:[^"\\]|\\.)*" ?)+)\] (.*)$'
)
ACCESS_EVENTS = [
    AccessEvent("sign-in", "ok", sub="alice", email="alice@acme.test", remote="10.0.0.7", tenant_id="acme"),
    AccessEvent("refusal", "no-role", sub='mal"lory]', remote="10.0.0.9", detail="no rule matches the claims"),
    AccessEvent("token-created", "ok", sub="cli:ops", remote="cli", tenant_id="globex", detail="token tok_1 (x)"),
]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_access_events_reach_rsyslog_with_their_own_msgid_and_structured_data(
    make_client: MakeClient, rsyslog: tuple[int, Path], kind: str
) -> None:
    port, out = rsyslog
    client = await make_client(kind, **FAST)
    await add_sink(client, name="syslog", kind="syslog", target=f"tcp://127.0.0.1:{port}",
                   events=["decisions", "access"])  # fmt: skip
    records = [decision() for _ in range(3)]
    await post(client, records)
    for event in ACCESS_EVENTS:
        await client.app[ACCESS_KEY].record(event)

    def lines() -> tuple[list[str], list[str]]:
        text = out.read_text().splitlines() if out.exists() else []
        return [line for line in text if ACCESS_LINE.match(line)], [line for line in text if LINE.match(line)]

    await until(lambda: len(lines()[0]) == 3 and len(lines()[1]) == 3, what="3 access lines and 3 decision lines")
    access, _ = lines()
    for line, event in zip(access, ACCESS_EVENTS, strict=True):
        match = ACCESS_LINE.match(line)
        assert match
        params = {k: v.replace('\\"', '"').replace("\\]", "]") for k, v in PARAM.findall(match.group(5))}
        body = msgspec.json.decode(match.group(6))
        assert params["id"] == str(body["id"]) and params["kind"] == event.kind and params["sub"] == event.sub
        assert params.get("tenant_id") == event.tenant_id and body["outcome"] == event.outcome
        # Facility "log audit" (13); a refusal is a warning (4), the rest notice (5).
        assert int(match.group(1)) == 13 * 8 + (4 if event.kind == "refusal" else 5)


@pytest.mark.slow
async def test_access_events_are_a_dataset_of_their_own_beside_the_archive(
    make_client: MakeClient, tmp_path: Path
) -> None:
    import duckdb

    client = await make_client(**FAST, sink_batch_max=4)
    archive = tmp_path / "archive"
    await add_sink(client, name="archive", kind="parquet", target=str(archive), events=["decisions", "access"])
    await post(client, [decision(tenant_id=t, session_id=f"s-{t}") for t in ["acme", "globex"] * 5])
    events = [AccessEvent("sign-in", "ok", sub=f"p{i}", tenant_id=[None, "acme", "globex"][i % 3]) for i in range(9)]
    for event in events:
        await client.app[ACCESS_KEY].record(event)

    async def done() -> bool:
        shown = await status(client, "archive")
        return bool(shown["delivered"] == 10 and shown["access_delivered"] == 9)

    deadline = time.monotonic() + 20
    while not await done():
        assert time.monotonic() < deadline, "the archive did not catch up"
        await asyncio.sleep(0.05)
    access = duckdb.sql(
        f"SELECT tenant, count(*), count(DISTINCT id), min(kind) FROM read_parquet('{archive}/access/**/*.parquet',"
        " hive_partitioning=true) GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    # The platform's events (no tenant) are Hive's default partition, which DuckDB reads as NULL.
    assert access == [("acme", 3, 3, "sign-in"), ("globex", 3, 3, "sign-in"), (None, 3, 3, "sign-in")]
    decisions = duckdb.sql(
        f"SELECT tenant, count(*) FROM read_parquet('{archive}/tenant=*/date=*/*.parquet', hive_partitioning=true)"
        " GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert decisions == [("acme", 5), ("globex", 5)]
