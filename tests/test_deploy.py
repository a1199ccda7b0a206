"""compose.yaml and the Dockerfile agree with the CLI and the settings."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml

from cavra_ingest.cli import build_parser
from cavra_ingest.settings import Settings

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
    known = {f"CAVRA_{field.name.upper()}" for field in dataclasses.fields(Settings)}
    assert set(service["environment"]) <= known
    settings = Settings.from_env({k: str(v) for k, v in service["environment"].items()})
    assert settings.store_kind == "sqlite"
    # The named volume holds the SQLite file.
    mount = service["volumes"][0].split(":")
    assert mount[0] in compose["volumes"] and settings.store_path.parent == Path(mount[1])
    # Readiness, not liveness: traffic only once the store is open and migrated, none while draining.
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert duration_seconds(service["stop_grace_period"]) > settings.drain_deadline_s
    assert service["ports"][0].endswith(":8080")


def test_dockerfile_command_matches_compose():
    dockerfile = (ROOT / "Dockerfile").read_text()
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    command = compose["services"]["cavra-ingest"]["command"]
    assert f"CMD {command}".replace("'", '"') in dockerfile
    for copied in ("cavra_ingest", "workers", "migrations"):
        assert f"COPY {copied}" in dockerfile


def served_paths() -> set[str]:
    from cavra_ingest.app import create_app

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
