"""compose.yaml and the Dockerfile agree with the CLI and the settings."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cavra_ingest.cli.main import build_parser
from cavra_ingest.settings import Settings, variable_names

ROOT = Path(__file__).resolve().parent.parent


def duration_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_compose_service_runs_the_cli_with_known_settings():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service = compose["services"]["cavra-ingest"]
    command = service["command"]
    assert command[0] == "cavra-ingest"
    args = build_parser().parse_args(command[1:])
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 8080)
    known = set(variable_names().values())
    assert set(service["environment"]) <= known
    settings = Settings.from_env({k: str(v) for k, v in service["environment"].items()})
    assert settings.store.kind == "sqlite"
    # The named volume holds the SQLite file.
    mount = service["volumes"][0].split(":")
    assert mount[0] in compose["volumes"] and settings.store.path.parent == Path(mount[1])
    # Readiness, not liveness: traffic only once the store is open and migrated, none while draining.
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert duration_seconds(service["stop_grace_period"]) > settings.writer.drain_deadline_s
    assert service["ports"][0].endswith(":8080")


def test_dockerfile_command_matches_compose():
    dockerfile = (ROOT / "Dockerfile").read_text()
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    command = compose["services"]["cavra-ingest"]["command"]
    assert f"CMD {command}".replace("'", '"') in dockerfile
    for copied in ("cavra_ingest", "workers", "migrations"):
        assert f"COPY {copied}" in dockerfile


def served_paths() -> set[str]:
    from cavra_ingest.http.app import create_app

    return {route.resource.canonical for route in create_app(Settings()).router.routes() if route.resource}


def test_dockerfile_checks_readiness_as_a_fixed_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    health = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", dockerfile, re.S | re.M)
    assert health, "no HEALTHCHECK"
    probe = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", health.group(1))
    assert probe and probe.group(2) == "/readyz" and probe.group(2) in served_paths()
    assert int(probe.group(1)) == 8080
    user = re.search(r"^USER (\d+)(?::(\d+))?$", dockerfile, re.M)
    assert user, "USER must be a numeric UID, so Kubernetes' runAsNonRoot can verify it"
    assert int(user.group(1)) > 0 and f"--uid {user.group(1)}" in dockerfile
    # The image's environment holds only real settings.
    for line in re.findall(r"^ENV (.+)$", dockerfile, re.M):
        Settings.from_env(dict(pair.split("=", 1) for pair in line.split()))


def test_dockerignore_keeps_the_context_small_but_complete():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    ignored.discard("")
    assert {".git", ".venv", ".cavra", "tests", "bench"} <= ignored
    copied = re.findall(r"^COPY (.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert source not in ignored, f"{source} is copied but ignored"


def test_scale_out_profile_runs_the_cli_with_known_settings():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    profile = {name: s for name, s in services.items() if "scale-out" in s.get("profiles", [])}
    # The default stays the single SQLite container; the topology is opt-in.
    assert "profiles" not in services["cavra-ingest"]
    assert {"postgres", "nats-1", "nats-2", "nats-3", "ingest-1", "ingest-2", "worker-1", "worker-2", "lb"} <= set(
        profile
    )
    known = set(variable_names().values())
    known |= {name + "_FILE" for name in known}
    for name in ("ingest-1", "ingest-2", "worker-1", "worker-2"):
        service = profile[name]
        args = build_parser().parse_args(service["command"][1:])
        assert args.command == ("serve" if name.startswith("ingest") else "worker")
        env = service["environment"]
        assert set(env) <= known, set(env) - known
        # Secrets from files only: no database URL or key in the environment itself.
        assert "CAVRA_ACTIVITY_DB" not in env and env["CAVRA_ACTIVITY_DB_FILE"].startswith("/run/secrets/")
        assert set(service["secrets"]) <= set(compose["secrets"])
        plain = {k: str(v) for k, v in env.items() if not k.endswith("_FILE")}
        settings = Settings.from_env(plain | {"CAVRA_ACTIVITY_DB": "postgresql://cavra@postgres/cavra"})
        assert settings.store.kind == "postgres" and settings.broker.stream_replicas == 3
        hosts = [url.split("//")[1].split(":")[0] for url in settings.broker.broker_url.split(",")]
        assert sorted(hosts) == ["nats-1", "nats-2", "nats-3"]
        assert service["healthcheck"]["test"] and service["deploy"]["resources"]["limits"]
        assert duration_seconds(service["stop_grace_period"]) > settings.writer.drain_deadline_s
    for node in ("nats-1", "nats-2", "nats-3"):
        command = profile[node]["command"]
        # A current server, fsyncing every write before the ack (deploy/nats.conf; docs/guarantees.md).
        image = profile[node]["image"]
        assert tuple(int(p) for p in image.split(":")[1].split("-")[0].split(".")[:2]) >= (2, 12), image
        assert command[command.index("--config") + 1] == "/etc/nats/nats.conf"
        assert "./deploy/nats.conf:/etc/nats/nats.conf:ro" in profile[node]["volumes"]
        assert "--jetstream" in command and command[command.index("--name") + 1] == node
        routes = command[command.index("--routes") + 1]
        assert sorted(r.split("//")[1].split(":")[0] for r in routes.split(",")) == sorted(
            {"nats-1", "nats-2", "nats-3"} - {node}
        )
    assert profile["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")
    assert re.search(r"^\s*sync_interval:\s*always\s*$", (ROOT / "deploy" / "nats.conf").read_text(), re.M)
    # The load balancer checks readiness of both replicas.
    haproxy = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in haproxy
    assert "server ingest-1 ingest-1:8080" in haproxy and "server ingest-2 ingest-2:8080" in haproxy
    assert profile["lb"]["ports"][0].endswith(":8080")


def test_settings_read_secrets_from_files(tmp_path):
    secret = tmp_path / "database_url"
    secret.write_text("postgresql://cavra:s3cret@db/cavra\n")
    settings = Settings.from_env({"CAVRA_ACTIVITY_DB_FILE": str(secret)})
    assert settings.store.activity_db == "postgresql://cavra:s3cret@db/cavra"
    import pytest

    from cavra_ingest.settings import SettingsError

    with pytest.raises(SettingsError, match="CAVRA_ACTIVITY_DB_FILE: cannot read"):
        Settings.from_env({"CAVRA_ACTIVITY_DB_FILE": str(tmp_path / "missing")})
    with pytest.raises(SettingsError, match="CAVRA_BROKER_URL: expected comma-separated nats://"):
        Settings.from_env({"CAVRA_BROKER_URL": "http://x:4222"})


def test_the_lock_pins_every_runtime_dependency_with_hashes():
    """The image installs only from requirements.lock (--require-hashes): a dependency missing there breaks it."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    wanted = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = (root / "requirements.lock").read_text()
    pinned = {m.group(1).lower().replace("_", "-") for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", lock, re.MULTILINE)}
    for requirement in wanted:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")
        assert name in pinned, f"{name} is a dependency but requirements.lock does not pin it"
    for block in re.split(r"\n(?=[A-Za-z])", lock.split("\n", 2)[2]):
        assert "--hash=sha256:" in block, block.splitlines()[0]
