"""The README stands alone: links stay in the repository, the API table is one table, every setting is listed."""

from __future__ import annotations

import re
from pathlib import Path

from cavra_ingest.http.app import create_app
from cavra_ingest.http.openapi import registered
from cavra_ingest.settings import ALIASES, SPECS, Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_link_stays_in_the_repository_and_resolves() -> None:
    for target in re.findall(r"\]\(([^)]+)\)", README):
        if target.startswith(("http://127.0.0.1", "http://localhost")):
            continue
        assert not re.match(r"[a-z]+://", target), f"{target} leaves the repository"
        path = (ROOT / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), target


def api_table() -> list[str]:
    lines = README.split("## API", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| route"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return table


def test_api_table_is_one_table_naming_every_route() -> None:
    table = "\n".join(api_table())
    rest = README.split("## API", 1)[1].split("##", 1)[0].replace(table, "")
    assert "| `" not in rest, "a blank line splits the API table"
    for method, path in registered(create_app(Settings())):
        assert f"{method} {path}" in table, f"{method} {path} is not in the API table"
    assert "`sqlite`, `json` or `postgres`" in table


def test_every_setting_and_old_name_is_in_the_settings_table() -> None:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for spec in SPECS:
        assert spec.env in section, spec.env
    for alias in ALIASES:
        assert alias in section
    assert "docs/contract.md" in README and (ROOT / "docs" / "contract.md").exists()
