"""Settings are checked at start: one clear line per problem, exit 2; unknown and renamed variables warn."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cavra_ingest import __version__
from cavra_ingest.cli.lifecycle import redact
from cavra_ingest.settings import SPECS, Settings, SettingsError, unknown_variables


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAVRA_")}
    return subprocess.run(
        [sys.executable, "-m", "cavra_ingest", *args], env={**clean, **(env or {})}, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip


def test_every_bad_value_is_one_line_naming_its_variable() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {"CAVRA_PORT": "abc", "CAVRA_UVLOOP": "maybe", "CAVRA_QUEUE_MAX_RECORDS": "0", "CAVRA_LOG_FORMAT": "xml",
             "CAVRA_DRAIN_DEADLINE_S": "soon"}
        )  # fmt: skip
    assert sorted(caught.value.problems) == sorted(
        [
            "CAVRA_PORT: expected an integer, got 'abc'",
            "CAVRA_UVLOOP: expected one of 1, 0, true, false, yes, no, on, off, got 'maybe'",
            "CAVRA_DRAIN_DEADLINE_S: expected a number, got 'soon'",
            "CAVRA_QUEUE_MAX_RECORDS: expected a positive number, got 0",
            "CAVRA_LOG_FORMAT: expected one of text, json, got 'xml'",
        ]
    )
    with pytest.raises(SettingsError, match="CAVRA_PORT: expected a port number 0..65535, got 70000"):
        Settings.from_env({"CAVRA_PORT": "70000"})


def test_serve_with_a_bad_setting_exits_2_with_one_line_and_no_traceback() -> None:
    result = run_cli("serve", env={"CAVRA_PORT": "abc"})
    assert result.returncode == 2
    assert result.stderr.strip() == "cavra-ingest: CAVRA_PORT: expected an integer, got 'abc'"


def test_unknown_variables_are_named_with_the_closest_setting() -> None:
    found = unknown_variables({"CAVRA_PROT": "1", "CAVRA_QUEUE_MAX_RECORD": "5", "CAVRA_PORT": "1", "HOME": "/"})
    assert found == [
        "CAVRA_PROT is not a cavra-ingest setting and is ignored; did you mean CAVRA_PORT?",
        "CAVRA_QUEUE_MAX_RECORD is not a cavra-ingest setting and is ignored; did you mean CAVRA_QUEUE_MAX_RECORDS?",
    ]
    result = run_cli("config", env={"CAVRA_PROT": "9000"})
    assert result.returncode == 0 and "did you mean CAVRA_PORT?" in result.stderr


def test_old_limit_names_still_work_and_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cavra_ingest.settings"):
        settings = Settings.from_env({"CAVRA_MAX_BATCH_RECORDS": "7", "CAVRA_BATCH_MAX_RECORDS": "9"})
    assert (settings.limits.request_max_records, settings.writer.commit_max_records) == (7, 9)
    assert sorted(record.getMessage() for record in caplog.records) == [
        "CAVRA_BATCH_MAX_RECORDS is deprecated: use CAVRA_COMMIT_MAX_RECORDS",
        "CAVRA_MAX_BATCH_RECORDS is deprecated: use CAVRA_REQUEST_MAX_RECORDS",
    ]
    # The new name wins, silently.
    caplog.clear()
    both = Settings.from_env({"CAVRA_REQUEST_MAX_RECORDS": "3", "CAVRA_MAX_BATCH_RECORDS": "7"})
    assert both.limits.request_max_records == 3 and not caplog.records
    with pytest.raises(SettingsError, match="CAVRA_MAX_BATCH_RECORDS: expected an integer"):
        Settings.from_env({"CAVRA_MAX_BATCH_RECORDS": "many"})


def test_a_port_in_use_is_one_line(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--db", str(tmp_path / "a.db"))
    assert result.returncode == 1
    assert f"cavra-ingest: cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"cavra-ingest {__version__}")


def test_config_prints_effective_settings_with_secrets_redacted() -> None:
    result = run_cli(
        "config",
        env={"CAVRA_ACTIVITY_DB": "postgresql://app:s3cret@db:5432/activity?sslmode=require&password=other",
             "CAVRA_PORT": "9001"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout and "other" not in result.stdout
    lines = result.stdout.splitlines()
    assert "CAVRA_PORT=9001  # default: 8080" in lines and "CAVRA_REQUEST_MAX_RECORDS=5000" in lines
    assert (
        "CAVRA_ACTIVITY_DB=postgresql://app:***@db:5432/activity?sslmode=require&password=***  # default: unset"
        in lines
    )
    # By group, in the declaration's order.
    assert lines.index("# server") < lines.index("CAVRA_PORT=9001  # default: 8080") < lines.index("# store")
    assert redact("api_tokens", "abc") == "***" and redact("host", "127.0.0.1") == "127.0.0.1"
    assert redact("activity_db", "postgresql://db/x?password=p") == "postgresql://db/x?password=***"


def test_limits_that_zero_turns_off_accept_zero_and_refuse_negatives() -> None:
    off = {"CAVRA_MIN_FREE_DISK_BYTES": "0", "CAVRA_MAX_FUTURE_SKEW_S": "0", "CAVRA_AUTH_CACHE_S": "0"}
    settings = Settings.from_env(off)
    assert (settings.limits.min_free_disk_bytes, settings.limits.max_future_skew_s, settings.auth.auth_cache_s) == (
        0,
        0.0,
        0.0,
    )
    with pytest.raises(SettingsError, match="CAVRA_MAX_FUTURE_SKEW_S: expected a non-negative number, got -1"):
        Settings.from_env({"CAVRA_MAX_FUTURE_SKEW_S": "-1"})


def test_the_configuration_page_is_written_from_the_declaration_and_current() -> None:
    from cavra_ingest.settings.reference import markdown

    page = (Path(__file__).resolve().parents[2] / "docs/configuration.md").read_text()
    assert page == markdown(), "run `make docs` (cavra-ingest config --markdown > docs/configuration.md)"
    for spec in SPECS:
        assert f"| `{spec.env}` |" in page, spec.env
